//! Per-campaign outcomes: their names, and reading a campaign's counters.
//!
//! The counters are kept by the bank's campaign scripts, beside each shard's users
//! (`{ns}:cs:{<app>.<shard>}:<campaignId>`), counted in the same step that settles a
//! recipient, so each recipient is counted once whatever crashes: `sent`, `sent_unconfirmed`,
//! `no_credential`, `failed:<errcode>`, `dead_lettered`, `unknown` (a subscribe send WeChat
//! may or may not have delivered, never resent), `stopped` (not tried: the campaign's data was
//! refused, `47003`), `invalid_data` (not tried: the recipient's own data was refused at
//! dispatch, contract 8.1), `cancelled` (an operator cancelled the campaign),
//! `skipped_quiet_hours` (not tried: the app's quiet hours held it and the campaign said
//! `"quietHours": "skip"`, contract 8.5) (recipient outcomes), `deferred` (a figure, not an
//! outcome: recipients held for quiet hours, counted when first held), `duplicate` (a
//! job for a recipient already settled), `retried` (a failed attempt scheduled again), and
//! `last_at_ms` (when the last outcome was counted). Kept 30 days after their last update.
//! This module must not decide outcomes.

use std::collections::BTreeMap;
use std::fmt;

use wxpush_bank::{Bank, BankError};
use wxpush_domain::AppId;

/// A recipient's final outcome.
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
    /// A subscribe send timed out after the request left: WeChat may have delivered it, and
    /// offers no way to tell (no formId to be refused a second time), so it is not resent.
    Unknown,
    /// Not tried: WeChat refused the campaign's data (`47003`) for another recipient, so the
    /// campaign was stopped rather than failing every user the same way.
    Stopped,
    /// Not tried: the recipient's own data (contract 8.1) was refused at dispatch.
    InvalidData,
    /// Not sent: an operator cancelled the campaign (contract 8.5); nothing spent.
    Cancelled,
    /// Not sent: the app's quiet hours held it and the campaign (or message) said
    /// `"quietHours": "skip"` (contract 8.5); nothing spent.
    SkippedQuietHours,
    /// Not sent: the user is at the app's frequency cap (contract 8.5); nothing spent.
    Capped,
    /// The job found the campaign already settled for this recipient, with this outcome.
    Duplicate(String),
}

impl Recorded {
    /// The counter this outcome is counted under.
    pub fn field(&self) -> String {
        match self {
            Recorded::Sent => "sent".into(),
            Recorded::SentUnconfirmed => "sent_unconfirmed".into(),
            Recorded::NoCredential => "no_credential".into(),
            Recorded::Failed(code) => format!("failed:{code}"),
            Recorded::DeadLettered => "dead_lettered".into(),
            Recorded::Unknown => "unknown".into(),
            Recorded::Stopped => "stopped".into(),
            Recorded::InvalidData => "invalid_data".into(),
            Recorded::Cancelled => "cancelled".into(),
            Recorded::SkippedQuietHours => "skipped_quiet_hours".into(),
            Recorded::Capped => "capped".into(),
            Recorded::Duplicate(_) => "duplicate".into(),
        }
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recorded::Duplicate(earlier) => write!(f, "duplicate (already {earlier})"),
            other => f.write_str(&other.field()),
        }
    }
}

/// A campaign's counters, summed over the shards.
pub async fn read(
    bank: &Bank,
    app: &AppId,
    campaign_id: &str,
) -> Result<BTreeMap<String, i64>, BankError> {
    bank.campaign_counters(app, campaign_id).await
}
