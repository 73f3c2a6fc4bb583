//! Connecting a role to what it depends on, each failure one readable line.
//!
//! [`Deps::connect`] reaches Redis (loading the bank's scripts) and RabbitMQ, failing fast with
//! the URL as an operator may see it (scheme, host, port, path: `SecretUrl`'s `Display`) and
//! the cause, the URL's password cut out of it. `WXPUSH_AMQP_URL` may list several broker nodes
//! (comma-separated): a role connects to the first that answers, and after losing its
//! connection tries the *next* node first ([`Deps::reconnect_broker`]), so a role whose node
//! went away moves to another. It must not declare topology or start consuming.

use std::time::Duration;

use wxpush_bank::{Bank, BankSettings};
use wxpush_broker::Broker;
use wxpush_domain::config::SecretUrl;
use wxpush_domain::Config;

/// A dependency that cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("cannot reach Redis at {url}: {reason}")]
    Redis { url: String, reason: String },
    #[error(transparent)]
    RabbitMq(#[from] wxpush_broker::BrokerError),
    #[error("cannot use WXPUSH_TLS_CA_FILE {path}: {reason}")]
    TlsCaFile { path: String, reason: String },
    #[error("this RabbitMQ connection was made elsewhere and cannot be reopened")]
    NotReopenable,
}

/// The connections a role works with.
#[derive(Clone)]
pub struct Deps {
    pub bank: Bank,
    pub broker: Broker,
    /// Where the broker connection came from, to open it again after an outage (`None` for
    /// connections made elsewhere, which are not reopened).
    amqp: Option<std::sync::Arc<AmqpTarget>>,
}

struct AmqpTarget {
    url: SecretUrl,
    name: String,
    ca_pem: Option<Vec<u8>>,
    /// The index of the node to try first next time (the one after the last connected).
    next: std::sync::atomic::AtomicUsize,
}

impl AmqpTarget {
    /// Connects to the first node that answers, from [`AmqpTarget::next`] on, round the list.
    async fn connect(&self) -> Result<Broker, DepsError> {
        use std::sync::atomic::Ordering;
        let urls = self.url.urls();
        let first = self.next.load(Ordering::Relaxed) % urls.len().max(1);
        let mut failures = Vec::new();
        for k in 0..urls.len() {
            let i = (first + k) % urls.len();
            let ca = self.ca_pem.as_deref();
            match Broker::connect_tls(urls[i], &self.name, Duration::from_secs(10), ca).await {
                Ok(b) => {
                    self.next.store(i + 1, Ordering::Relaxed);
                    if urls.len() > 1 {
                        tracing::info!(node = %wxpush_domain::config::redact_url(urls[i]), "connected to RabbitMQ");
                    }
                    return Ok(b);
                }
                Err(e) => failures.push(e),
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0).into());
        }
        // Several nodes, none reachable: one line naming each with its reason.
        let reasons: Vec<String> = failures
            .iter()
            .map(|e| match e {
                wxpush_broker::BrokerError::Connect { url, reason } => format!("{url}: {reason}"),
                other => other.to_string(),
            })
            .collect();
        Err(wxpush_broker::BrokerError::Connect {
            url: self.url.redacted(),
            reason: format!("no node answered ({})", reasons.join("; ")),
        }
        .into())
    }
}

impl Deps {
    /// Connects to Redis and RabbitMQ as configured. `name` labels the AMQP connection.
    pub async fn connect(config: &Config, name: &str) -> Result<Self, DepsError> {
        let settings = BankSettings::from_config(config);
        let ca = read_ca_file(config.tls_ca_file.as_deref())?;
        let bank = tokio::time::timeout(
            Duration::from_secs(10),
            Bank::connect_tls(
                config.redis_url.expose(),
                config.namespace.clone(),
                settings,
                ca.as_deref(),
            ),
        )
        .await
        .map_err(|_| "no answer within 10s".to_owned())
        .and_then(|r| r.map_err(|e| root_cause(&e)))
        .map_err(|reason| DepsError::Redis {
            url: config.redis_url.redacted(),
            reason: config.redis_url.scrub(&reason),
        })?;
        let target = AmqpTarget {
            url: config.amqp_url.clone(),
            name: name.to_owned(),
            ca_pem: ca,
            next: Default::default(),
        };
        let broker = target.connect().await?;
        Ok(Self {
            bank,
            broker,
            amqp: Some(std::sync::Arc::new(target)),
        })
    }

    /// Connections made elsewhere (tests and benchmarks run one session, unsupervised);
    /// [`Deps::reconnect_broker`] cannot reopen them.
    pub fn from_parts(bank: Bank, broker: Broker) -> Self {
        Self {
            bank,
            broker,
            amqp: None,
        }
    }

    /// Opens a new RabbitMQ connection like the first one (after the first was lost), with
    /// the same URLs, name and extra CA certificates: with several nodes, the one after the
    /// node last connected is tried first.
    pub async fn reconnect_broker(&self) -> Result<Broker, DepsError> {
        let Some(t) = &self.amqp else {
            return Err(DepsError::NotReopenable);
        };
        t.connect().await
    }
}

/// The PEM of `WXPUSH_TLS_CA_FILE`, read once for both connections (`None` when not set).
fn read_ca_file(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, DepsError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let fail = |reason: String| DepsError::TlsCaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(fail("it holds no PEM certificate".into()));
    }
    Ok(Some(pem))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
