//! One message per user per campaign: claiming a credential *for a campaign*.
//!
//! The bank keeps, beside each user's credentials and in the same hash slot, the user's
//! campaign marks (`{ns}:m:{<app>.<shard>}:<openId>`, laid out in `lua/campaign_marks.lua`).
//! An attempt at a campaign's message to a user claims a credential under a lease whose owner
//! is the attempt's fencing token; every later step of that attempt (a renewed lease for
//! another call, the next credential after a refusal, the settle) names the token, and Redis
//! refuses it ([`CampaignClaim::Superseded`], `false` from [`Bank::campaign_settle`]) once
//! another attempt has taken the lease over. Every later attempt, duplicate job or redelivery
//! for the same campaign and user:
//! - finds the campaign settled for the user (sent, failed, or no credential): nothing to do;
//! - finds another attempt's lease running: waits;
//! - or resumes with the **same** credential ([`CampaignClaim::Held`]), told whether a call
//!   with it may already have delivered the message (`in_doubt`) and whether it has expired
//!   meanwhile: the sender's decision table says what may be done with it (a formId may be
//!   sent again, since WeChat refuses its second use; a prepayId use or a consent may not).
//!
//! A subscribe campaign claims a consent instead ([`Bank::campaign_claim_consent`],
//! `lua/campaign_claim_consent.lua`) under the same marks, leases and answers; the marks then
//! hold the member `s` + template id. Settling is the same call for both.
//!
//! Final outcomes are kept 8 days, then pruned (`campaign_marks.lua`): a user's marks hold the
//! campaigns of the last 8 days, not every campaign ever.
//!
//! The campaign's outcome counters live beside the marks too, one hash per shard
//! (`{ns}:cs:{<app>.<shard>}:<campaign>`): the scripts count an outcome in the same step that
//! settles it, so each recipient is counted exactly once whatever crashes, and a sent message
//! costs two scripts (claim, settle). [`Bank::campaign_counters`] sums the shards.
//!
//! With replicas asked for (`WXPUSH_REDIS_WAIT_REPLICAS`), every claim and settle is followed
//! by `WAIT` in the same pipeline, and a shortfall is [`BankError::NotReplicated`]: the script's
//! effect stands (a claim holds its lease, a settle is recorded), so the caller hands its job
//! back rather than acknowledge it, and a later attempt finds what was written.
//!
//! This module must not call WeChat or decide what its answers mean.

use std::time::Duration;

use redis::{FromRedisValue, Value};
use wxpush_domain::{AppId, Credential, OpenId, SINGLE_MARK};

use crate::keys::shard_of;
use crate::{member, Bank, BankError};

/// What a campaign claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignClaim {
    /// The campaign is already settled for this user, with this outcome (a duplicate job,
    /// or a redelivery after a crash).
    Done(String),
    /// Another attempt holds the lease for this long.
    Busy(Duration),
    /// This attempt's lease was taken over by another attempt (or its campaign was settled):
    /// it must not call WeChat, settle or give anything back.
    Superseded,
    /// The user has no usable credential (now recorded as the user's outcome).
    NoCredential,
    /// The user is at the app's frequency cap (contract 8.5): recorded `capped`, nothing
    /// claimed.
    Capped,
    /// A newly claimed credential.
    Fresh(Credential),
    /// The credential an earlier call held. `in_doubt`: a call with it may have delivered the
    /// message (it timed out after sending, or its attempt died). `expired`: it expires
    /// within the safety margin (WeChat may refuse it as expired, whatever happened before).
    /// `taken_over`: another attempt's lease on it ran out without that attempt releasing it
    /// (its process stalled or died), rather than being released (a retry, the fence).
    Held {
        credential: Credential,
        in_doubt: bool,
        expired: bool,
        taken_over: bool,
    },
}

/// Which claim: see `lease()` in `lua/campaign_marks.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// Start, or resume the held credential (another attempt's lease must have run out).
    Take,
    /// The same attempt calls again with the credential it holds: the lease is renewed.
    Renew,
    /// The same attempt's credential was refused by WeChat: claim the user's next one.
    Next,
}

impl ClaimMode {
    pub(crate) fn arg(self) -> &'static str {
        match self {
            ClaimMode::Take => "take",
            ClaimMode::Renew => "renew",
            ClaimMode::Next => "next",
        }
    }
}

/// How an attempt ends, for [`Bank::campaign_settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle<'a> {
    /// The campaign is done for this user, with this outcome (`sent`, `failed:40037`, ...);
    /// `give_back`: WeChat did not use the credential, it goes back to the user.
    Final { outcome: &'a str, give_back: bool },
    /// No outcome yet: keep the credential for the next attempt; `in_doubt` if WeChat may
    /// have delivered with it; `retry` to count it as a failed attempt scheduled again.
    Release { in_doubt: bool, retry: bool },
}

/// A receipt wanted for a recipient's outcome (contract 8.3), written by the script that settles
/// the outcome into the shard's outbox ([`crate::keys::Keys::receipt_outbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt<'a> {
    /// The receipt's fields as JSON text without its closing brace
    /// (`{"messageId":...,"campaignId":...,"appId":...,"openId":...,"templateId":...`); the
    /// script adds `outcome`, `errcode`, `msgid` and `at`.
    pub fields: &'a str,
    /// The msgid WeChat gave a sent message, at the settle that records it.
    pub msgid: Option<i64>,
}

/// What a claim may carry beside the claim itself ([`Bank::campaign_claim_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimExtras<'a> {
    /// The receipt a `no_credential` or `capped` outcome is recorded with.
    pub receipt: Option<Receipt<'a>>,
    /// A single message's messageId, bound to its user in the same round trip
    /// ([`Bank::bind_message`]); only at the first claim.
    pub bind: Option<&'a str>,
    /// The frequency cap (messages per user per rolling 24 hours) this message is held to and
    /// counted toward; `None` when it does not count (no cap, or a single message the app does
    /// not count). Checked and counted only when a claim takes a new credential.
    pub cap: Option<u32>,
}

impl Bank {
    /// A script's receipt keys (the outbox and today's msgid map of the user's shard), which
    /// every campaign script taking a receipt has last among its keys.
    pub(crate) fn receipt_keys(&self, app: &AppId, open_id: &OpenId) -> [String; 2] {
        let shard = shard_of(open_id);
        [
            self.keys.receipt_outbox(app, shard),
            self.keys.receipt_msgids(app, shard, unix_day()),
        ]
    }

    /// A script's receipt arguments, last among its arguments: `''` when none is wanted.
    pub(crate) fn receipt_args(receipt: Option<Receipt<'_>>) -> [String; 2] {
        match receipt {
            Some(r) => [
                r.fields.to_owned(),
                r.msgid.map(|m| m.to_string()).unwrap_or_default(),
            ],
            None => [String::new(), String::new()],
        }
    }

    /// A claim script's cap argument: `''` when the message does not count.
    pub(crate) fn cap_arg(cap: Option<u32>) -> String {
        cap.map(|n| n.to_string()).unwrap_or_default()
    }

    /// Claims (or resumes, renews, replaces) the credential for `campaign`'s message to
    /// `open_id`, leased to `owner` (the attempt's fencing token) for `lease`.
    pub async fn campaign_claim(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        owner: &str,
        lease: Duration,
        mode: ClaimMode,
    ) -> Result<CampaignClaim, BankError> {
        self.campaign_claim_with(
            app,
            open_id,
            campaign,
            owner,
            lease,
            mode,
            ClaimExtras::default(),
        )
        .await
        .map(|(claim, _)| claim)
    }

    /// [`Bank::campaign_claim`], with its [`ClaimExtras`]: the receipt an outcome settled by
    /// the claim is recorded with, the frequency cap, and for a single message its binding:
    /// the claim, and the openId the id is bound to (`None` without `bind`). A claim made for
    /// an id bound to another user must be settled by the caller (nothing sent).
    #[allow(clippy::too_many_arguments)]
    pub async fn campaign_claim_with(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        owner: &str,
        lease: Duration,
        mode: ClaimMode,
        extras: ClaimExtras<'_>,
    ) -> Result<(CampaignClaim, Option<String>), BankError> {
        let mut cmd = self.scripts.campaign_claim.evalsha();
        cmd.arg(6)
            .arg(self.keys.credentials(app, open_id))
            .arg(self.keys.index_of(app, open_id))
            .arg(self.keys.marks(app, open_id))
            .arg(self.counters_of(app, open_id, campaign))
            .arg(&self.receipt_keys(app, open_id)[..])
            .arg(self.settings.claim_margin_secs)
            .arg(open_id.as_str())
            .arg(campaign)
            .arg(owner)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(mode.arg())
            .arg(&Self::receipt_args(extras.receipt)[..])
            .arg(Self::cap_arg(extras.cap));
        let (applied, bound) = match extras.bind {
            Some(id) => {
                let (applied, bound) = self.run_with_binding(app, open_id, id, &cmd).await?;
                (applied, Some(bound))
            }
            None => (
                self.scripts
                    .run_applied(&mut self.conn.clone(), &cmd, self.settings.wait_replicas)
                    .await?,
                None,
            ),
        };
        let reply = Vec::<Value>::from_redis_value(applied.replicated()?)
            .map_err(|e| BankError::Protocol(format!("campaign_claim: {e}")))?;
        Ok((parse_campaign_claim(&reply)?, bound))
    }

    /// Ends an attempt at `campaign`'s message to `open_id` (claimed by either
    /// [`Bank::campaign_claim`] or [`Bank::campaign_claim_consent`]; `template` is the job's,
    /// unused since consent buckets: the marks name the held consent's template). One script call. Returns whether it was applied:
    /// `false` when `owner` no longer holds the lease (another attempt took it over) or the
    /// campaign is settled already, and then nothing changed.
    pub async fn campaign_settle(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        _template: &str,
        owner: &str,
        settle: Settle<'_>,
    ) -> Result<bool, BankError> {
        self.campaign_settle_with(app, open_id, campaign, _template, owner, settle, None)
            .await
    }

    /// [`Bank::campaign_settle`], with the receipt a final outcome is recorded with.
    #[allow(clippy::too_many_arguments)]
    pub async fn campaign_settle_with(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        _template: &str,
        owner: &str,
        settle: Settle<'_>,
        receipt: Option<Receipt<'_>>,
    ) -> Result<bool, BankError> {
        let flag = |b: bool| if b { "1" } else { "0" };
        let (action, doubt, retried, give_back) = match settle {
            Settle::Final { outcome, give_back } => {
                (format!("={outcome}"), "0", "0", flag(give_back))
            }
            Settle::Release { in_doubt, retry } => {
                ("R".to_owned(), flag(in_doubt), flag(retry), "0")
            }
        };
        let shard = shard_of(open_id);
        let mut cmd = self.scripts.campaign_settle.evalsha();
        cmd.arg(13)
            .arg(self.keys.marks(app, open_id))
            .arg(self.counters_of(app, open_id, campaign))
            .arg(self.keys.credentials(app, open_id))
            .arg(self.keys.index_of(app, open_id))
            .arg(self.keys.consent_bucket(app, open_id))
            .arg(self.keys.consent_totals(app, shard))
            .arg(self.keys.consent_numbers(app, shard))
            .arg(self.keys.campaign_retryable(app, shard, campaign))
            .arg(self.keys.consent_holders(app, shard))
            .arg(self.keys.legacy_consents(app, open_id))
            .arg(&self.receipt_keys(app, open_id)[..])
            .arg(self.keys.campaign_rates(app, shard, campaign))
            .arg(campaign)
            .arg(owner)
            .arg(&action)
            .arg(doubt)
            .arg(retried)
            .arg(give_back)
            .arg(open_id.as_str())
            .arg(self.settings.claim_margin_secs)
            .arg(crate::CONSENT_TTL_SECS)
            .arg(&Self::receipt_args(receipt)[..]);
        let applied = self.run_settle(app, open_id, &cmd).await?;
        Ok(applied == 1)
    }
}

/// What [`Bank::campaign_outcome`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked {
    /// The outcome is recorded and counted.
    Recorded,
    /// The recipient was settled already, with this outcome (counted `duplicate`).
    Done(String),
    /// Another job's attempt holds the recipient's lease: look again after this long.
    Busy(Duration),
    /// Another job's lease on the recipient ran out: that job's copy (or `campaign retry`)
    /// owns the recipient, not this one.
    Superseded,
}

impl Bank {
    /// Records `outcome` for `campaign`'s recipient `open_id` without claiming or spending
    /// anything (`invalid_data`, contract 8.1): settled and counted once, like every outcome.
    pub async fn campaign_outcome(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        outcome: &str,
        receipt: Option<Receipt<'_>>,
    ) -> Result<Marked, BankError> {
        let mut cmd = self.scripts.campaign_outcome.evalsha();
        cmd.arg(4)
            .arg(self.keys.marks(app, open_id))
            .arg(self.counters_of(app, open_id, campaign))
            .arg(&self.receipt_keys(app, open_id)[..])
            .arg(campaign)
            .arg(outcome)
            .arg(&Self::receipt_args(receipt)[..]);
        let reply: Vec<Value> = self
            .scripts
            .run_applied(&mut self.conn.clone(), &cmd, self.settings.wait_replicas)
            .await?
            .replicated()?;
        let text = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        match text(reply.first()).as_deref() {
            Some("recorded") => Ok(Marked::Recorded),
            Some("superseded") => Ok(Marked::Superseded),
            Some("done") => Ok(Marked::Done(text(reply.get(1)).unwrap_or_default())),
            Some("busy") => {
                let ms = match reply.get(1) {
                    Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(1000),
                    _ => 1000,
                };
                Ok(Marked::Busy(Duration::from_millis(ms)))
            }
            _ => Err(BankError::Protocol(format!(
                "campaign_outcome returned {reply:?}"
            ))),
        }
    }

    /// Adds one to `field` of the counters `campaign`'s recipient `open_id` is counted in
    /// (kept 30 days, like the outcomes): a figure that is not an outcome, such as `deferred`
    /// (a recipient held for quiet hours, contract 8.5). Counted at least once per event (a
    /// crash before the caller's next step counts it again): a figure, not a ledger.
    pub async fn campaign_tally(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        field: &str,
    ) -> Result<(), BankError> {
        let key = self.counters_of(app, open_id, campaign);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg(field)
            .arg(1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(COUNTERS_TTL_SECS)
            .ignore();
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// The outcome counters a recipient of `campaign` is counted in, in the user's slot. Single
    /// messages (their mark id starts with [`SINGLE_MARK`]) share one set per app and shard:
    /// counters of their own would be a key per message.
    pub(crate) fn counters_of(&self, app: &AppId, open_id: &OpenId, campaign: &str) -> String {
        let shard = crate::keys::shard_of(open_id);
        if campaign.starts_with(SINGLE_MARK) {
            let mut all = [0u8; 4];
            return self
                .keys
                .campaign_counters(app, shard, SINGLE_MARK.encode_utf8(&mut all));
        }
        self.keys.campaign_counters(app, shard, campaign)
    }

    /// A campaign's sends by time ([`RATE_FIELD_PREFIX`]), summed over the shards: (start of
    /// the bucket, Unix s; sends in it), oldest first. One pipelined round trip (on a cluster,
    /// one per shard, concurrently). Read by the dashboard's campaign page only.
    pub async fn campaign_rates(
        &self,
        app: &AppId,
        campaign: &str,
    ) -> Result<Vec<(i64, u64)>, BankError> {
        let reads = (0..crate::SHARDS)
            .map(|n| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.keys.campaign_rates(app, n, campaign));
                cmd
            })
            .collect();
        let shards: Vec<std::collections::HashMap<String, i64>> = self.read_batch(reads).await?;
        let mut total = std::collections::BTreeMap::new();
        for (field, n) in shards.into_iter().flatten() {
            if let Some(b) = field
                .strip_prefix(RATE_FIELD_PREFIX)
                .and_then(|b| b.parse::<i64>().ok())
            {
                *total
                    .entry(b.saturating_mul(RATE_BUCKET_SECS))
                    .or_insert(0u64) += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(total.into_iter().collect())
    }

    /// A campaign's outcome counters, summed over the shards (`last_at_ms`: the latest), in
    /// one pipelined round trip (on a cluster, one per shard, concurrently). Empty if nothing
    /// was recorded. (Sends by time, `r:` fields, written into the counters by the version
    /// before they had a key of their own, are left out: not outcomes.)
    pub async fn campaign_counters(
        &self,
        app: &AppId,
        campaign: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>, BankError> {
        let shards: Vec<std::collections::HashMap<String, i64>> =
            self.read_batch(self.counter_reads(app, campaign)).await?;
        let mut total = std::collections::BTreeMap::new();
        for shard in shards {
            for (field, n) in shard {
                if field.starts_with(RATE_FIELD_PREFIX) {
                    continue;
                }
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

/// The fields that count a campaign's sends (`sent`, `sent_unconfirmed`) by the 10 seconds of
/// Redis time they happened in: `r:<unix seconds / 10>` (`campaign_marks.lua`'s `count`), in
/// each shard's [`crate::Keys::campaign_rates`], summed over the shards by
/// [`Bank::campaign_rates`].
pub const RATE_FIELD_PREFIX: &str = "r:";

/// The width of a [`RATE_FIELD_PREFIX`] field's time bucket, in seconds.
pub const RATE_BUCKET_SECS: i64 = 10;

impl Bank {
    /// `HGETALL` of each shard's outcome counters of `campaign`, in shard order.
    pub(crate) fn counter_reads(&self, app: &AppId, campaign: &str) -> Vec<redis::Cmd> {
        (0..crate::SHARDS)
            .map(|shard| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.keys.campaign_counters(app, shard, campaign));
                cmd
            })
            .collect()
    }
}

/// How long a campaign's counters are kept after their last update (`COUNTERS_TTL` of
/// `lua/campaign_marks.lua`).
const COUNTERS_TTL_SECS: u64 = 30 * 24 * 3600;

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
        ("superseded", [_]) => Ok(CampaignClaim::Superseded),
        ("none", [_]) => Ok(CampaignClaim::NoCredential),
        ("capped", [_]) => Ok(CampaignClaim::Capped),
        ("fresh", [_, m, e]) => Ok(CampaignClaim::Fresh(credential(m, e)?)),
        ("held", [_, m, e, d, x, t]) => Ok(CampaignClaim::Held {
            credential: credential(m, e)?,
            in_doubt: text(d).as_deref() != Some("0"),
            expired: text(x).as_deref() == Some("1"),
            taken_over: text(t).as_deref() == Some("1"),
        }),
        _ => Err(BankError::Protocol(format!(
            "campaign claim returned {reply:?}"
        ))),
    }
}

/// Today, in Unix days (this machine's clock: the msgid maps are looked up on either side of it).
pub(crate) fn unix_day() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}
