//! RabbitMQ for wxpush: the topology, connections, batch consuming, confirmed publishing and
//! dead-lettering with a reason.
//!
//! - [`topology`] names and declares every exchange and queue of a namespace (idempotently).
//! - [`Broker`] is one connection; it opens channels for consumers and publishers.
//! - [`BatchConsumer`] hands deliveries over in batches (as many as are ready, up to a
//!   maximum) and acknowledges a whole batch with one `multiple` ack.
//! - [`Publisher`] publishes with publisher confirms; [`Publisher::dead_letter`] sends a
//!   message that cannot be processed to the namespace's dead-letter queue with its reason.
//!
//! Every request a role makes while it sets up (a channel, the topology, a consumer, a
//! confirm-mode publisher) answers within [`SETUP_TIMEOUT`] or fails: a connection that dies
//! at the wrong moment must not leave a role waiting for ever instead of reconnecting.
//!
//! This crate must not know what messages mean: parsing and storing are the roles'.

pub mod consume;
pub mod publish;
pub mod topology;

use std::time::Duration;

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};
use wxpush_domain::config::{redact_url, scrub_url};

pub use consume::{Batch, BatchConsumer, JobConsumer};
pub use lapin::message::Delivery;
pub use publish::Publisher;
pub use topology::Topology;

/// What can go wrong with the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reach RabbitMQ at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not confirm a publish to {exchange}")]
    Nacked { exchange: String },
    #[error("consumer on {queue} was cancelled or its channel closed")]
    ConsumerGone { queue: String },
    #[error("the connection to RabbitMQ was lost")]
    ConnectionLost,
    #[error("RabbitMQ did not answer within {}s: {what}", SETUP_TIMEOUT.as_secs())]
    TimedOut { what: &'static str },
    #[error(
        "the queues of namespace {namespace} exist with other arguments than {wanted} queues get \
         (RabbitMQ refused {argument}; most likely they are {other} queues, from an older wxpush \
         or WXPUSH_QUEUE_TYPE={other}): set WXPUSH_QUEUE_TYPE={other} to keep using them, or \
         move them to {wanted} queues (docs/operations.md#quorum-queues)"
    )]
    QueueType {
        namespace: String,
        argument: String,
        wanted: &'static str,
        other: &'static str,
    },
}

impl BrokerError {
    /// An error that no retry gets past (the broker's queues do not match the configuration).
    pub fn is_permanent(&self) -> bool {
        matches!(self, BrokerError::QueueType { .. })
    }
}

/// The longest a set-up request (channel, declarations, consumer, publisher) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut`, or [`BrokerError::TimedOut`] after [`SETUP_TIMEOUT`].
pub(crate) async fn within<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(SETUP_TIMEOUT, fut)
        .await
        .map_err(|_| BrokerError::TimedOut { what })?
}

/// One connection to RabbitMQ.
#[derive(Clone)]
pub struct Broker {
    conn: std::sync::Arc<Connection>,
}

impl Broker {
    /// Connects, failing within `timeout` with a readable reason (the password redacted).
    /// An `amqps://` URL trusts the system's certificate store only; see [`Broker::connect_tls`].
    pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Self, BrokerError> {
        Self::connect_tls(url, name, timeout, None).await
    }

    /// Like [`Broker::connect`], and an `amqps://` URL also trusts the CA certificates in
    /// `ca_pem` (PEM text), beside the system's native certificate store. `ca_pem` is unused for
    /// `amqp://`. The error is one line: the URL as [`redact_url`] shows it (no userinfo, no
    /// query) and the cause, with the URL and its password cut out of it as well.
    pub async fn connect_tls(
        url: &str,
        name: &str,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, BrokerError> {
        let redacted = redact_url(url);
        let fail = |reason: String| {
            // Some parse errors quote the URL as given: never let its password through.
            let reason = scrub_url(&reason, url);
            BrokerError::Connect {
                url: redacted.clone(),
                reason: reason.replace('\n', " "),
            }
        };
        let cert_chain = match ca_pem.map(std::str::from_utf8).transpose() {
            Ok(pem) => pem.map(str::to_owned),
            Err(_) => return Err(fail("the extra CA certificates are not PEM text".into())),
        };
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain,
        };
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let builder = DefaultConnectionBuilder::new()
            .map_err(|e| fail(e.to_string()))?
            .with_uri_str(url.to_owned())
            .with_properties(props)
            .with_tls_config(tls);
        let conn = match tokio::time::timeout(timeout, builder.connect()).await {
            Err(_) => return Err(fail(format!("no answer within {timeout:?}"))),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Ok(Ok(c)) => c,
        };
        Ok(Self {
            conn: std::sync::Arc::new(conn),
        })
    }

    /// A new channel. A channel the broker closed with an error (a passive declare of a
    /// missing queue, a refused declaration) can hand that error to the next channel opened,
    /// lapin reusing its id: while the connection is up, one more try gets a clean one.
    pub async fn channel(&self) -> Result<lapin::Channel, BrokerError> {
        let open = || {
            within("opening a channel", async {
                Ok(self.conn.create_channel().await?)
            })
        };
        match open().await {
            Err(_) if self.is_connected() => open().await,
            r => r,
        }
    }

    /// Deletes `queues` and `exchanges` (messages and bindings with them): how many of each.
    /// One the broker refuses closes the channel, and the next name gets a new one. For
    /// clean-ups (the demo's, the test kit's), never for the roles.
    pub async fn delete_all(
        &self,
        queues: &[String],
        exchanges: &[String],
    ) -> Result<(usize, usize), BrokerError> {
        let (mut deleted_queues, mut deleted_exchanges) = (0, 0);
        let mut ch = self.channel().await?;
        for name in queues {
            if ch
                .queue_delete(name.as_str().into(), Default::default())
                .await
                .is_ok()
            {
                deleted_queues += 1;
            } else {
                ch = self.channel().await?;
            }
        }
        for name in exchanges {
            if ch
                .exchange_delete(name.as_str().into(), Default::default())
                .await
                .is_ok()
            {
                deleted_exchanges += 1;
            } else {
                ch = self.channel().await?;
            }
        }
        let _ = ch.close(200, "ok".into()).await;
        Ok((deleted_queues, deleted_exchanges))
    }

    /// Messages ready in `queue` (not counting unacknowledged ones), or `None` when the queue
    /// does not exist.
    pub async fn queue_ready(&self, queue: &str) -> Result<Option<u32>, BrokerError> {
        Ok(self.queue_counts(queue).await?.map(|(ready, _)| ready))
    }

    /// Messages ready in `queue` and its consumers, or `None` when the queue does not exist.
    /// A passive declare on a channel of its own (a missing queue closes it).
    pub async fn queue_counts(&self, queue: &str) -> Result<Option<(u32, u32)>, BrokerError> {
        let ch = self.channel().await?;
        let declared = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => {
                let _ = ch.close(200, "ok".into()).await;
                Ok(Some((q.message_count(), q.consumer_count())))
            }
            Err(_) => Ok(None),
        }
    }

    /// True while the connection is usable.
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Closes the connection politely (after consumers and publishers are done).
    pub async fn close(&self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ca_certificates_that_are_not_text_are_refused_before_connecting() {
        let url = "amqps://guest:s3cret@localhost:1/%2f";
        let e = Broker::connect_tls(url, "t", Duration::from_secs(1), Some(b"\xff\xfe"))
            .await
            .err()
            .expect("refused");
        assert_eq!(
            e.to_string(),
            "cannot reach RabbitMQ at amqps://localhost:1/%2f: \
             the extra CA certificates are not PEM text"
        );
    }
}
