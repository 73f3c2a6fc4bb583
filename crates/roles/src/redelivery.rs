//! How many times a message has come to a role without being settled: the guard that ends a
//! loop in which one message is handed back (or kills its consumer) again and again.
//!
//! A message settles when a role acknowledges it or dead-letters it. One that comes back
//! unsettled [`REDELIVERY_LIMIT`] times is dead-lettered with the reason `redelivered`
//! instead of being processed once more, whatever kept it from settling: an error that recurs
//! every time (a corrupted key, a script error), a crash, a connection the broker closed.
//! The count is a counter in Redis per queue and body digest, raised only for a delivery the
//! broker marks `redelivered` (a first delivery costs no round trip) and forgotten an hour
//! after its last raise, or the broker's own count (`x-delivery-count`, quorum queues) when
//! that is higher. Both, because the broker's count depends on its version: up to RabbitMQ 4.2
//! a quorum queue counts every return, from 4.3 on a `basic.nack` with requeue (how the roles
//! hand a message back) is not counted. Two messages with the same body share a counter, which only brings the limit
//! closer for a body that keeps coming back. This module must not decide what to do with a
//! message short of that: the roles do.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use sha2::{Digest, Sha256};
use wxpush_bank::Bank;
use wxpush_domain::Namespace;
use wxpush_redis::Conn;

use crate::RoleError;

/// Deliveries of one message (the first included) after which it is dead-lettered unread.
/// RabbitMQ 4's default delivery limit on quorum queues is 20 too.
pub const REDELIVERY_LIMIT: u32 = 20;

/// The reason code of a message dead-lettered for coming back too often.
pub const REDELIVERED: &str = "redelivered";

/// How long a redelivery count is kept after its last raise.
const WINDOW: Duration = Duration::from_secs(3600);

/// Counts deliveries of messages that come back.
#[derive(Clone)]
pub struct Redeliveries {
    conn: Conn,
    ns: Namespace,
}

impl Redeliveries {
    pub fn new(bank: &Bank) -> Self {
        Self {
            conn: bank.connection(),
            ns: bank.keys().namespace().clone(),
        }
    }

    /// The deliveries of each message so far, this one included (1 for a first delivery),
    /// in one Redis round trip for those that need one.
    pub async fn count(
        &self,
        queue: &str,
        deliveries: &[&Delivery],
    ) -> Result<Vec<u32>, RoleError> {
        let mut counts: Vec<u32> = deliveries.iter().map(|d| from_broker(d)).collect();
        let mut cmds = Vec::new();
        let mut asked = Vec::new();
        for (i, d) in deliveries.iter().enumerate() {
            if d.redelivered {
                let key = self.key(queue, &d.data);
                let mut incr = redis::cmd("INCR");
                incr.arg(&key);
                let mut expire = redis::cmd("EXPIRE");
                expire.arg(&key).arg(WINDOW.as_secs());
                cmds.extend([incr, expire]);
                asked.push(i);
            }
        }
        if !asked.is_empty() {
            // One pipeline on a single node; one per key's slot on a cluster.
            let batch = wxpush_redis::run_batch(&self.conn, cmds, None, &[]).await?;
            for (i, reply) in asked.into_iter().zip(batch.replies.into_iter().step_by(2)) {
                let n: u32 = redis::FromRedisValue::from_redis_value(reply).map_err(|e| {
                    RoleError::Redis(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "a redelivery count",
                        e.to_string(),
                    )))
                })?;
                // The counter holds the redeliveries; the first delivery came before it.
                counts[i] = counts[i].max(n.saturating_add(1));
            }
        }
        Ok(counts)
    }

    fn key(&self, queue: &str, body: &[u8]) -> String {
        counter_key(&self.ns, queue, body)
    }
}

/// The Redis key counting the redeliveries of `body` in `queue`: `<ns>:rd:<queue>:{<digest>}`
/// (the digest is the hash tag: counters spread over a cluster's slots, each counter's
/// commands in one).
pub fn counter_key(ns: &Namespace, queue: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    wxpush_redis::tagged(ns, &format!("rd:{queue}"), hex, None)
}

/// The deliveries the broker counted (`x-delivery-count` is the number of earlier ones), 1
/// for a delivery it does not mark redelivered, 0 when only Redis can tell (a redelivered
/// one is counted in Redis as well: [`Redeliveries::count`] takes the higher).
fn from_broker(d: &Delivery) -> u32 {
    let header = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    let earlier = match header {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::LongUInt(n)) => Some(n),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(n).ok(),
        _ => None,
    };
    // Only on a redelivery: a message published with the header (a dead letter replayed from
    // an older wxpush's copy, say) is on its first delivery all the same.
    if !d.redelivered {
        return 1;
    }
    earlier.map_or(0, |n| n.saturating_add(1))
}

/// The reason text of a message dead-lettered for coming back `n` times.
pub fn reason(n: u32) -> String {
    format!(
        "delivered {n} times without being settled (at most {REDELIVERY_LIMIT}): an error that \
         recurs, or a crash or a lost connection each time; see the role's log"
    )
}
