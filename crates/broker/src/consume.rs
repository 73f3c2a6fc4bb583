//! Consuming in batches with manual acknowledgements.
//!
//! [`BatchConsumer::next_batch`] waits for one delivery, then takes whatever else is already
//! buffered (up to a maximum count and a maximum of body bytes) without waiting, so batches
//! grow with load and a lone message is never held back. A [`Batch`] is settled with one `multiple` ack (or nack) on its last
//! delivery tag. Deliveries are processed in order on one channel, so a multiple ack settles
//! exactly the batch. [`JobConsumer`] is the other shape: deliveries handled concurrently,
//! each acknowledged on its own. This module must not look inside messages.

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::{Broker, BrokerError};

/// A consumer on one queue, on a channel of its own.
pub struct BatchConsumer {
    channel: Channel,
    consumer: Consumer,
    queue: String,
}

/// Deliveries taken together; settle them with [`Batch::ack`] or [`Batch::nack`].
pub struct Batch {
    pub deliveries: Vec<Delivery>,
}

impl BatchConsumer {
    /// Opens a channel with the given prefetch and starts consuming `queue`.
    pub async fn start(
        broker: &Broker,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<Self, BrokerError> {
        let (channel, consumer) = open(broker, queue, prefetch, tag).await?;
        Ok(Self {
            channel,
            consumer,
            queue: queue.to_owned(),
        })
    }

    /// The next batch: at least one delivery, at most `max`, and no more once its bodies add
    /// up to `max_bytes`. `Ok(None)` once the consumer has been cancelled (by
    /// [`BatchConsumer::cancel`] or by the broker).
    pub async fn next_batch(
        &mut self,
        max: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, BrokerError> {
        let first = tokio::select! {
            d = self.consumer.next() => match d {
                None => return Ok(None),
                Some(d) => d?,
            },
            () = channel_lost(&self.channel) => {
                return Err(BrokerError::ConsumerGone { queue: self.queue.clone() })
            }
        };
        let mut bytes = first.data.len();
        let mut deliveries = Vec::with_capacity(max.min(1024));
        deliveries.push(first);
        while deliveries.len() < max && bytes < max_bytes {
            match self.consumer.next().now_or_never() {
                Some(Some(d)) => {
                    let d = d?;
                    bytes += d.data.len();
                    deliveries.push(d);
                }
                Some(None) | None => break,
            }
        }
        Ok(Some(Batch { deliveries }))
    }

    /// Stops the broker sending more; deliveries not yet settled go back to the queue when
    /// the channel closes.
    pub async fn cancel(&self) -> Result<(), BrokerError> {
        self.channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
            .await?;
        Ok(())
    }

    /// Closes the channel: every unsettled delivery is requeued by the broker.
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Frees the bodies of the batch's deliveries once they have been read: what settles them
    /// (their delivery tags) stays. A batch being written to Redis then holds no bodies.
    pub fn forget_bodies(&mut self) {
        for d in &mut self.deliveries {
            d.data = Vec::new();
        }
    }

    /// Acknowledges every delivery of the batch (and any earlier unsettled one) at once.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        if let Some(last) = self.deliveries.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Hands the whole batch back to the queue (`requeue`) or drops it.
    pub async fn nack(&self, requeue: bool) -> Result<(), BrokerError> {
        if let Some(last) = self.deliveries.last() {
            last.acker
                .nack(BasicNackOptions {
                    multiple: true,
                    requeue,
                })
                .await?;
        }
        Ok(())
    }
}

/// A consumer whose deliveries are handled concurrently and settled one by one.
pub struct JobConsumer {
    pub channel: Channel,
    pub consumer: Consumer,
}

impl JobConsumer {
    /// Opens a channel with the given prefetch and starts consuming `queue`.
    pub async fn start(
        broker: &Broker,
        queue: &str,
        prefetch: u16,
        tag: &str,
    ) -> Result<Self, BrokerError> {
        let (channel, consumer) = open(broker, queue, prefetch, tag).await?;
        Ok(Self { channel, consumer })
    }
}

/// Hands one delivery back to its queue (`basic.nack` with requeue), for another consumer or
/// a later session.
pub async fn hand_back(delivery: &Delivery) -> Result<(), lapin::Error> {
    delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .map(drop)
}

/// Resolves once `channel` is no longer open (its connection lost or the channel closed).
/// An idle consumer is not always told when its connection dies; a role waiting for messages
/// selects on this too, so it notices within a second and reconnects.
pub async fn channel_lost(channel: &Channel) {
    while channel.status().connected() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Stops a consumer's deliveries and closes its channel (unsettled deliveries are requeued).
pub async fn stop_consuming(channel: &Channel, consumer_tag: lapin::types::ShortString) {
    let _ = channel
        .basic_cancel(consumer_tag, BasicCancelOptions::default())
        .await;
    let _ = channel.close(200, "bye".into()).await;
}

/// A channel of its own with the given prefetch, consuming `queue` with manual acks.
async fn open(
    broker: &Broker,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Result<(Channel, Consumer), BrokerError> {
    let channel = broker.channel().await?;
    let consumer = crate::within("starting a consumer", async {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        Ok(channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?)
    })
    .await?;
    Ok((channel, consumer))
}
