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
//! A subscribe campaign claims a consent instead ([`Bank::campaign_claim_consent`],
//! `lua/campaign_claim_consent.lua`) under the same marks, leases and answers; the marks then
//! hold the member `s` + template id. Settling is the same call for both: a release without
//! doubt gives a held consent back to the user at once (a consent has no identity WeChat
//! could check on a resend), where a formId stays held for the next attempt.
//!
//! The campaign's outcome counters live beside the marks too, one hash per shard
//! (`{ns}:cs:{<app>.<shard>}:<campaign>`): the scripts count an outcome in the same step that
//! settles it, so each recipient is counted exactly once whatever crashes, and a sent message
//! costs two scripts (claim, settle). [`Bank::campaign_counters`] sums the shards.
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
    /// have accepted this one; `retry` to count it as a failed attempt scheduled again.
    Release { in_doubt: bool, retry: bool },
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
        cmd.arg(4)
            .arg(self.keys.credentials(app, open_id))
            .arg(self.keys.index_of(app, open_id))
            .arg(self.keys.marks(app, open_id))
            .arg(self.counters_of(app, open_id, campaign))
            .arg(self.settings.claim_margin_secs)
            .arg(open_id.as_str())
            .arg(campaign)
            .arg(owner)
            .arg(lease.as_millis() as u64)
            .arg(if next { "next" } else { "take" });
        let reply: Vec<Value> = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        parse_campaign_claim(&reply)
    }

    /// Ends an attempt at `campaign`'s message to `open_id` (claimed by either
    /// [`Bank::campaign_claim`] or [`Bank::campaign_claim_consent`]). Returns whether it was
    /// applied (not when another attempt took the lease over, or the campaign is settled).
    ///
    /// One script call; two when a consent goes back to the user (a release without doubt):
    /// the first call learns the held consent's template, whose index key the second passes.
    pub async fn campaign_settle(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        owner: &str,
        settle: Settle<'_>,
    ) -> Result<bool, BankError> {
        let flag = |b: bool| if b { "1" } else { "0" };
        let (action, doubt, retried) = match settle {
            Settle::Final(outcome) => (format!("={outcome}"), "0", "0"),
            Settle::Release { in_doubt, retry } => ("R".to_owned(), flag(in_doubt), flag(retry)),
        };
        let shard = crate::keys::shard_of(open_id);
        let mut template: Option<String> = None;
        // The template can only change if the marks change under us: a few tries at most.
        for _ in 0..3 {
            let mut cmd = self.scripts.campaign_settle.evalsha();
            cmd.arg(if template.is_some() { 5 } else { 4 })
                .arg(self.keys.marks(app, open_id))
                .arg(self.counters_of(app, open_id, campaign))
                .arg(self.keys.consents(app, open_id))
                .arg(self.keys.consent_totals(app, shard));
            if let Some(t) = &template {
                cmd.arg(self.keys.consent_index(app, shard, t));
            }
            cmd.arg(campaign)
                .arg(owner)
                .arg(&action)
                .arg(doubt)
                .arg(retried)
                .arg(open_id.as_str())
                .arg(template.as_deref().unwrap_or(""))
                .arg(crate::CONSENT_TTL_SECS);
            let reply: Value = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
            match reply {
                Value::Int(applied) => return Ok(applied == 1),
                Value::Array(items) => match items.as_slice() {
                    [tag, t] if text(tag).as_deref() == Some("index") => template = text(t),
                    _ => break,
                },
                _ => break,
            }
        }
        Err(BankError::Protocol(
            "campaign settle did not apply with the held consent's template".into(),
        ))
    }
}

impl Bank {
    fn counters_of(&self, app: &AppId, open_id: &OpenId, campaign: &str) -> String {
        self.keys
            .campaign_counters(app, crate::keys::shard_of(open_id), campaign)
    }

    /// A campaign's outcome counters, summed over the shards (`last_at_ms`: the latest), in
    /// one pipelined round trip. Empty if nothing was recorded.
    pub async fn campaign_counters(
        &self,
        app: &AppId,
        campaign: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>, BankError> {
        let mut pipe = redis::pipe();
        for shard in 0..crate::SHARDS {
            pipe.cmd("HGETALL")
                .arg(self.keys.campaign_counters(app, shard, campaign));
        }
        let shards: Vec<std::collections::HashMap<String, i64>> =
            pipe.query_async(&mut self.conn.clone()).await?;
        let mut total = std::collections::BTreeMap::new();
        for shard in shards {
            for (field, n) in shard {
                let slot = total.entry(field.clone()).or_insert(0i64);
                if field == "last_at_ms" {
                    *slot = (*slot).max(n);
                } else {
                    *slot += n;
                }
            }
        }
        Ok(total)
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

pub(crate) fn parse_campaign_claim(reply: &[Value]) -> Result<CampaignClaim, BankError> {
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
