//! Per-campaign outcomes in Redis: what the senders record as jobs finish.
//!
//! Two keys per campaign, sharing a hash tag derived from the campaign id (so one script
//! touches one Redis Cluster slot, whatever characters the id has; the id ends both keys, so no
//! id can collide with another key):
//! - `{ns}:cs:{<tag>}:<campaignId>`, the counters: `sent`, `sent_unconfirmed`, `no_credential`,
//!   `failed:<errcode>`, `dead_lettered` (one per recipient, each counted once), `duplicate`
//!   (a job for a recipient whose outcome was already recorded), `retried` (attempts that
//!   failed and were scheduled again), and `last_at_ms` (when the last outcome was recorded).
//!   Kept 30 days after its last update.
//! - `{ns}:cu:{<tag>}:<campaignId>`, each recipient's outcome, written once: recording an
//!   outcome and counting it are one script, so a sender killed between settling a user and
//!   recording the outcome leaves it to the redelivered job, which records it exactly once.
//!   Kept 8 days (as long as any job of the campaign may still be redelivered).
//!
//! This module must not decide outcomes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use redis::aio::ConnectionManager;
use wxpush_domain::{Namespace, OpenId};

/// How long a campaign's counters are kept after their last update.
pub const STATS_TTL_SECS: u64 = 30 * 24 * 3600;
/// How long each recipient's recorded outcome is kept.
pub const RECIPIENTS_TTL_SECS: u64 = 8 * 24 * 3600;

const RECORD: &str = r"
-- KEYS[1] counters, KEYS[2] recipients' outcomes. ARGV[1] outcome field, ARGV[2] openId (''
-- for a per-job count), ARGV[3] now (ms), ARGV[4] counters TTL (s), ARGV[5] recipients TTL (s).
-- Returns the field counted: the outcome, or 'duplicate' when the recipient had one already.
local field = ARGV[1]
if ARGV[2] ~= '' then
  if redis.call('HSETNX', KEYS[2], ARGV[2], field) == 0 then
    field = 'duplicate'
  end
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('HSET', KEYS[1], 'last_at_ms', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return field
";

fn record_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    S.get_or_init(|| redis::Script::new(RECORD))
}

/// An outcome as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// WeChat accepted the message.
    Sent,
    /// An attempt timed out after the request left, and the retry with the same formId was
    /// answered `41029`: the first attempt had been accepted.
    SentUnconfirmed,
    /// The user held no usable credential.
    NoCredential,
    /// WeChat refused the message for good, with this error code.
    Failed(i64),
    /// Attempts exhausted; the job went to the dead-letter queue.
    DeadLettered,
    /// The outcome an earlier job already settled for this recipient (its field name).
    Settled(String),
}

impl Recorded {
    pub fn field(&self) -> String {
        match self {
            Recorded::Sent => "sent".into(),
            Recorded::SentUnconfirmed => "sent_unconfirmed".into(),
            Recorded::NoCredential => "no_credential".into(),
            Recorded::Failed(code) => format!("failed:{code}"),
            Recorded::DeadLettered => "dead_lettered".into(),
            Recorded::Settled(field) => field.clone(),
        }
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field())
    }
}

/// The key of a campaign's counters, `{ns}:cs:{<tag>}:<campaignId>`.
pub fn counters_key(ns: impl fmt::Display, campaign_id: &str) -> String {
    format!("{}:cs:{{{}}}:{}", ns, tag(campaign_id), campaign_id)
}

/// Records outcomes and reads them back.
#[derive(Clone)]
pub struct Outcomes {
    conn: ConnectionManager,
    ns: Namespace,
}

/// The hash tag of a campaign's keys: FNV-1a of its id, in hex.
fn tag(campaign_id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in campaign_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Outcomes {
    pub fn new(conn: ConnectionManager, ns: Namespace) -> Self {
        Self { conn, ns }
    }

    /// The campaign's counters.
    pub fn key(&self, campaign_id: &str) -> String {
        counters_key(&self.ns, campaign_id)
    }

    /// Each recipient's outcome.
    pub fn recipients_key(&self, campaign_id: &str) -> String {
        format!("{}:cu:{{{}}}:{}", self.ns, tag(campaign_id), campaign_id)
    }

    /// Records a recipient's final outcome, once: returns the field counted (the outcome, or
    /// `duplicate` if this recipient's outcome was already recorded).
    pub async fn record(
        &self,
        campaign_id: &str,
        recipient: &OpenId,
        outcome: &Recorded,
    ) -> Result<String, redis::RedisError> {
        self.run(campaign_id, &outcome.field(), recipient.as_str())
            .await
    }

    /// Counts a failed attempt that was scheduled again.
    pub async fn count_retry(&self, campaign_id: &str) -> Result<(), redis::RedisError> {
        self.run(campaign_id, "retried", "").await.map(|_| ())
    }

    async fn run(
        &self,
        campaign_id: &str,
        field: &str,
        recipient: &str,
    ) -> Result<String, redis::RedisError> {
        record_script()
            .key(self.key(campaign_id))
            .key(self.recipients_key(campaign_id))
            .arg(field)
            .arg(recipient)
            .arg(now_ms())
            .arg(STATS_TTL_SECS)
            .arg(RECIPIENTS_TTL_SECS)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Every counter of a campaign (and `last_at_ms`).
    pub async fn read(&self, campaign_id: &str) -> Result<BTreeMap<String, u64>, redis::RedisError> {
        redis::cmd("HGETALL")
            .arg(self.key(campaign_id))
            .query_async(&mut self.conn.clone())
            .await
    }
}
