//! Per-campaign outcome counters in Redis: what the senders record as jobs finish.
//!
//! One hash per campaign, `{ns}:cs:<campaignId>` (the id ends the key, so no id can collide
//! with another key), field → count: `sent`, `sent_unconfirmed`, `no_credential`,
//! `failed:<errcode>`, `retried`, `dead_lettered`. It expires 30 days after its last update.
//! Recording is one pipelined round trip. This module must not decide outcomes.

use std::collections::BTreeMap;
use std::fmt;

use redis::aio::ConnectionManager;
use wxpush_domain::Namespace;

/// How long a campaign's counters are kept after their last update.
pub const STATS_TTL_SECS: u64 = 30 * 24 * 3600;

/// An outcome as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// An attempt failed and the job was scheduled again.
    Retried,
    /// The job went to the dead-letter queue.
    DeadLettered,
}

impl Recorded {
    pub fn field(&self) -> String {
        match self {
            Recorded::Sent => "sent".into(),
            Recorded::SentUnconfirmed => "sent_unconfirmed".into(),
            Recorded::NoCredential => "no_credential".into(),
            Recorded::Failed(code) => format!("failed:{code}"),
            Recorded::Retried => "retried".into(),
            Recorded::DeadLettered => "dead_lettered".into(),
        }
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field())
    }
}

/// Records outcomes and reads them back.
#[derive(Clone)]
pub struct Outcomes {
    conn: ConnectionManager,
    ns: Namespace,
}

impl Outcomes {
    pub fn new(conn: ConnectionManager, ns: Namespace) -> Self {
        Self { conn, ns }
    }

    pub fn key(&self, campaign_id: &str) -> String {
        format!("{}:cs:{}", self.ns, campaign_id)
    }

    pub async fn record(
        &self,
        campaign_id: &str,
        outcome: &Recorded,
    ) -> Result<(), redis::RedisError> {
        let key = self.key(campaign_id);
        redis::pipe()
            .hincr(&key, outcome.field(), 1)
            .ignore()
            .expire(&key, STATS_TTL_SECS as i64)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Every counter of a campaign.
    pub async fn read(
        &self,
        campaign_id: &str,
    ) -> Result<BTreeMap<String, u64>, redis::RedisError> {
        redis::cmd("HGETALL")
            .arg(self.key(campaign_id))
            .query_async(&mut self.conn.clone())
            .await
    }
}
