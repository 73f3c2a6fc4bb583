//! One message per user per campaign: claiming a credential *for a campaign*.
//!
//! The bank keeps, beside each user's credentials and in the same hash slot, the user's
//! campaign marks (`{ns}:m:{<app>.<shard>}:<openId>`, see `lua/campaign_claim.lua`). The first
//! attempt at a campaign's message to a user claims a credential and marks it held under a
//! lease; every later attempt, duplicate job or redelivery for the same campaign and user:
//! - finds the campaign settled for the user (sent, failed, or no credential): nothing to do;
//! - finds another attempt's lease running: waits;
//! - or resumes with the **same** credential. Sending a formId twice cannot produce two
//!   messages (WeChat answers `41029` to the second), so an attempt killed at any moment
//!   is safely finished by the next one; `in_doubt` tells it that a `41029` then means "the
//!   earlier attempt was accepted".
//!
//! This module must not call WeChat or decide what its answers mean.

use std::time::Duration;

use redis::Value;
use wxpush_domain::{AppId, Credential, OpenId};

use crate::{member, Bank, BankError};

/// What a campaign claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignClaim {
    /// The campaign is already settled for this user, with this outcome (a duplicate job,
    /// or a redelivery after a crash).
    Done(String),
    /// Another attempt holds the lease for this long.
    Busy(Duration),
    /// The user has no usable credential (now recorded as the user's outcome).
    NoCredential,
    /// A newly claimed credential.
    Fresh(Credential),
    /// The credential an earlier attempt held. `in_doubt`: that attempt may have been
    /// accepted by WeChat (it timed out after sending, or it died).
    Held {
        credential: Credential,
        in_doubt: bool,
    },
}

/// How an attempt ends, for [`Bank::campaign_settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle<'a> {
    /// The campaign is done for this user, with this outcome (`sent`, `failed:40037`, ...).
    Final(&'a str),
    /// No outcome yet: keep the credential for the next attempt; `in_doubt` if WeChat may
    /// have accepted this one.
    Release { in_doubt: bool },
}

impl Bank {
    /// Claims (or resumes) the credential for `campaign`'s message to `open_id`, leasing it
    /// to `owner` for `lease`. With `next`, the held credential was refused by WeChat and
    /// another one is claimed.
    pub async fn campaign_claim(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        owner: &str,
        lease: Duration,
        next: bool,
    ) -> Result<CampaignClaim, BankError> {
        let mut cmd = self.scripts.campaign_claim.evalsha();
        cmd.arg(3)
            .arg(self.keys.credentials(app, open_id))
            .arg(self.keys.index_of(app, open_id))
            .arg(self.keys.marks(app, open_id))
            .arg(self.settings.claim_margin_secs)
            .arg(open_id.as_str())
            .arg(campaign)
            .arg(owner)
            .arg(lease.as_millis() as u64)
            .arg(if next { "next" } else { "take" });
        let reply: Vec<Value> = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        parse_campaign_claim(&reply)
    }

    /// Ends an attempt at `campaign`'s message to `open_id`.
    pub async fn campaign_settle(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        owner: &str,
        settle: Settle<'_>,
    ) -> Result<bool, BankError> {
        let (action, doubt) = match settle {
            Settle::Final(outcome) => (format!("={outcome}"), "0"),
            Settle::Release { in_doubt } => ("R".to_owned(), if in_doubt { "1" } else { "0" }),
        };
        let mut cmd = self.scripts.campaign_settle.evalsha();
        cmd.arg(1)
            .arg(self.keys.marks(app, open_id))
            .arg(campaign)
            .arg(owner)
            .arg(action)
            .arg(doubt);
        let applied: i64 = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        Ok(applied == 1)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn credential(member: &Value, expiry: &Value) -> Result<Credential, BankError> {
    let expires_at = text(expiry)
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| BankError::Protocol("a held credential without an expiry".into()))?
        as i64;
    let Value::BulkString(m) = member else {
        return Err(BankError::Protocol(
            "a held credential without a member".into(),
        ));
    };
    member::decode(m, expires_at)
        .ok_or_else(|| BankError::Protocol("a held credential this version cannot read".into()))
}

fn parse_campaign_claim(reply: &[Value]) -> Result<CampaignClaim, BankError> {
    let tag = reply.first().and_then(text).unwrap_or_default();
    match (tag.as_str(), reply) {
        ("done", [_, outcome]) => text(outcome)
            .map(CampaignClaim::Done)
            .ok_or_else(|| BankError::Protocol("a campaign outcome that is not text".into())),
        ("busy", [_, ms]) => {
            let ms = text(ms).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            Ok(CampaignClaim::Busy(Duration::from_millis(ms)))
        }
        ("none", [_]) => Ok(CampaignClaim::NoCredential),
        ("fresh", [_, m, e]) => Ok(CampaignClaim::Fresh(credential(m, e)?)),
        ("held", [_, m, e, d]) => Ok(CampaignClaim::Held {
            credential: credential(m, e)?,
            in_doubt: text(d).as_deref() != Some("0"),
        }),
        _ => Err(BankError::Protocol(format!(
            "campaign claim returned {reply:?}"
        ))),
    }
}
