//! Connecting a role to what it depends on, each failure one readable line.
//!
//! [`Deps::connect`] reaches Redis (loading the bank's scripts) and RabbitMQ, failing fast with
//! the URL (password redacted) and the cause. It must not declare topology or start consuming.

use std::time::Duration;

use wxpush_bank::{Bank, BankSettings};
use wxpush_broker::Broker;
use wxpush_domain::config::redact_url;
use wxpush_domain::Config;

/// A dependency that cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("cannot reach Redis at {url}: {reason}")]
    Redis { url: String, reason: String },
    #[error(transparent)]
    RabbitMq(#[from] wxpush_broker::BrokerError),
}

/// The connections a role works with.
#[derive(Clone)]
pub struct Deps {
    pub bank: Bank,
    pub broker: Broker,
}

impl Deps {
    /// Connects to Redis and RabbitMQ as configured. `name` labels the AMQP connection.
    pub async fn connect(config: &Config, name: &str) -> Result<Self, DepsError> {
        let settings = BankSettings {
            claim_margin_secs: config.claim_margin_secs,
            user_cap: config.user_cap,
        };
        let bank = tokio::time::timeout(
            Duration::from_secs(10),
            Bank::connect(&config.redis_url, config.namespace.clone(), settings),
        )
        .await
        .map_err(|_| "no answer within 10s".to_owned())
        .and_then(|r| r.map_err(|e| root_cause(&e)))
        .map_err(|reason| DepsError::Redis {
            url: redact_url(&config.redis_url),
            reason,
        })?;
        let broker = Broker::connect(&config.amqp_url, name, Duration::from_secs(10)).await?;
        Ok(Self { bank, broker })
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
