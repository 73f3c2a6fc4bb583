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
//! This crate must not know what messages mean: parsing and storing are the roles'.

pub mod consume;
pub mod publish;
pub mod topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use wxpush_domain::config::redact_url;

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
}

/// One connection to RabbitMQ.
#[derive(Clone)]
pub struct Broker {
    conn: std::sync::Arc<Connection>,
}

impl Broker {
    /// Connects, failing within `timeout` with a readable reason (the password redacted).
    pub async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Self, BrokerError> {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let fail = |reason: String| BrokerError::Connect {
            url: redact_url(url),
            reason,
        };
        let conn = match tokio::time::timeout(timeout, Connection::connect(url, props)).await {
            Err(_) => return Err(fail(format!("no answer within {timeout:?}"))),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Ok(Ok(c)) => c,
        };
        Ok(Self {
            conn: std::sync::Arc::new(conn),
        })
    }

    pub async fn channel(&self) -> Result<lapin::Channel, BrokerError> {
        Ok(self.conn.create_channel().await?)
    }

    /// Messages ready in `queue` (not counting unacknowledged ones), or `None` when the queue
    /// does not exist. A passive declare on a channel of its own (a missing queue closes it).
    pub async fn queue_ready(&self, queue: &str) -> Result<Option<u32>, BrokerError> {
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
                Ok(Some(q.message_count()))
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
