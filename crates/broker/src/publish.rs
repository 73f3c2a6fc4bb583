//! Publishing with publisher confirms, and dead-lettering with a reason.
//!
//! A [`Publisher`] owns a channel in confirm mode; a publish returns only once RabbitMQ has
//! confirmed it, so a caller that acks its input afterwards never loses a message.
//! [`Publisher::dead_letter`] republishes a message that cannot be processed to
//! `<ns>.dead` (routed by its source) with the reason in headers, persistent.
//! This module must not decide what is poison.

use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};

use wxpush_domain::short_reason;

use crate::{Broker, BrokerError, Topology};

/// Header carrying the human-readable reason a message was dead-lettered.
pub const REASON_HEADER: &str = "x-wxpush-reason";
/// Header carrying the reason's short stable code.
pub const REASON_CODE_HEADER: &str = "x-wxpush-reason-code";
/// Header naming the queue the message was taken from.
pub const SOURCE_QUEUE_HEADER: &str = "x-wxpush-source-queue";
/// Header set instead of the original headers when those were too large to copy: their size.
pub const HEADERS_DROPPED_HEADER: &str = "x-wxpush-original-headers-dropped";

/// Largest original headers copied into a dead letter, in bytes (roughly as encoded). The
/// broker refuses a header frame over its frame size (128 KiB by default) and closes the
/// connection: a message whose own headers are near that, plus ours, would be handed back and
/// dead-lettered again for ever.
pub const MAX_COPIED_HEADER_BYTES: usize = 16 * 1024;

/// How many bytes of messages a role publishes before it waits for their confirms (and builds
/// the next ones): a page of jobs that each carry 32 KiB of data would otherwise be held, and
/// in flight, all at once.
pub const CONFIRM_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// `bodies` in batches, each closed once it holds `limit` bytes or more (so at least one body,
/// and at most one body past `limit`), built as they are taken: only one batch is held at once.
pub fn batches_by_bytes(
    bodies: impl Iterator<Item = Vec<u8>>,
    limit: usize,
) -> impl Iterator<Item = Vec<Vec<u8>>> {
    let mut bodies = bodies.peekable();
    std::iter::from_fn(move || {
        bodies.peek()?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < limit {
            let Some(body) = bodies.next() else { break };
            bytes += body.len();
            batch.push(body);
        }
        Some(batch)
    })
}

/// A confirm-mode channel.
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    pub async fn open(broker: &Broker, topology: Topology) -> Result<Self, BrokerError> {
        let channel = broker.channel().await?;
        crate::within("turning publisher confirms on", async {
            Ok(channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?)
        })
        .await?;
        Ok(Self { channel, topology })
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(BrokerError::Nacked {
                exchange: exchange.to_owned(),
            });
        }
        Ok(())
    }

    /// Publishes many persistent messages, keeping them all in flight, then waits for every
    /// confirm. Returns after the last one is confirmed.
    pub async fn publish_all<'a>(
        &self,
        exchange: &str,
        items: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), BrokerError> {
        let mut pending = Vec::new();
        for (routing_key, body) in items {
            pending.push(
                self.channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
        }
        for p in pending {
            if p.await?.is_nack() {
                return Err(BrokerError::Nacked {
                    exchange: exchange.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Sends `delivery` to the dead-letter queue of `source` with the reason attached, and
    /// waits for the confirm. The original body, headers and routing key are kept.
    pub async fn dead_letter(
        &self,
        source: &str,
        queue: &str,
        delivery: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let original = delivery.properties.headers().clone().unwrap_or_default();
        let size = table_size(&original);
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        let mut headers = if size <= MAX_COPIED_HEADER_BYTES {
            // Not the broker's delivery count: a dead letter replayed into a quorum queue would
            // carry it on its first delivery there, and be taken for one that came back that
            // many times.
            let mut copied = FieldTable::default();
            for (k, v) in original.inner() {
                if k.as_str() != "x-delivery-count" {
                    copied.insert(k.clone(), v.clone());
                }
            }
            copied
        } else {
            let mut only_size = FieldTable::default();
            only_size.insert(
                ShortString::from(HEADERS_DROPPED_HEADER),
                AMQPValue::LongLongInt(i64::try_from(size).unwrap_or(i64::MAX)),
            );
            only_size
        };
        // Every text of ours is bounded: a reason quoting hostile input, or a routing key of
        // 255 bytes, never makes the header frame too large.
        headers.insert(
            ShortString::from(REASON_HEADER),
            text(&short_reason(reason)),
        );
        headers.insert(
            ShortString::from(REASON_CODE_HEADER),
            text(&short_reason(code)),
        );
        headers.insert(ShortString::from(SOURCE_QUEUE_HEADER), text(queue));
        headers.insert(
            ShortString::from("x-wxpush-original-routing-key"),
            text(delivery.routing_key.as_str()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        self.publish(
            &self.topology.dead_exchange(),
            source,
            &delivery.data,
            properties,
        )
        .await
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}

/// About how many bytes `table` takes encoded: names, values and their type and length
/// fields, nested tables and arrays included.
fn table_size(table: &FieldTable) -> usize {
    table
        .inner()
        .iter()
        .map(|(k, v)| 1 + k.as_str().len() + value_size(v))
        .fold(0, usize::saturating_add)
}

fn value_size(v: &AMQPValue) -> usize {
    1 + match v {
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldTable(t) => 4 + table_size(t),
        AMQPValue::FieldArray(a) => {
            4 + a
                .as_slice()
                .iter()
                .map(value_size)
                .fold(0, usize::saturating_add)
        }
        _ => 8,
    }
}

/// Reads a text header (as the dead-letter headers are written).
pub fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_close_once_they_reach_their_bytes() {
        let bodies = [3usize, 3, 3, 10, 1].map(|n| vec![0u8; n]);
        let sizes: Vec<Vec<usize>> = batches_by_bytes(bodies.into_iter(), 6)
            .map(|b| b.iter().map(Vec::len).collect())
            .collect();
        assert_eq!(sizes, vec![vec![3, 3], vec![3, 10], vec![1]]);
        assert_eq!(batches_by_bytes(std::iter::empty(), 6).count(), 0);
    }
}
