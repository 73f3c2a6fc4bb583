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

use crate::{Broker, BrokerError, Topology};

/// Header carrying the human-readable reason a message was dead-lettered.
pub const REASON_HEADER: &str = "x-wxpush-reason";
/// Header carrying the reason's short stable code.
pub const REASON_CODE_HEADER: &str = "x-wxpush-reason-code";
/// Header naming the queue the message was taken from.
pub const SOURCE_QUEUE_HEADER: &str = "x-wxpush-source-queue";

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
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        headers.insert(ShortString::from(REASON_HEADER), text(reason));
        headers.insert(ShortString::from(REASON_CODE_HEADER), text(code));
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

/// Reads a text header (as the dead-letter headers are written).
pub fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
