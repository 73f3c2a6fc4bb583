//! Subscribe consents: counted per user and template, indexed per template, totalled per shard.
//!
//! A consent allows one subscribe message for one template, at any time: it has no value of
//! its own and no expiry, so it is not a member of the user's credential zset but a count:
//! - `{ns}:s:{<app>.<shard>}:<openId>` hash, templateId → consents left (≥ 1);
//! - `{ns}:t:{<app>.<shard>}:<templateId>` set, the shard's users holding ≥ 1 for it (what
//!   [`Bank::consent_page`] walks, as [`Bank::reachable_page`] walks the user index);
//! - `{ns}:tc:{<app>.<shard>}` hash, templateId → consents the shard's users hold.
//!
//! Every change goes through one script that changes the three together (store, campaign
//! claim, settle's give-back, clear), so the index and the totals stay exact however many
//! processes claim at once. All keys live 400 days ([`CONSENT_TTL_SECS`]) after the last
//! store: consents do not expire in WeChat, the TTL only reclaims abandoned users.
//!
//! What enters is bounded ([`crate::BankSettings`]): a store, and a give-back through
//! [`Bank::release_consent`], adds at most what brings the user's count for a template to
//! `consents_per_template`, and none for a template the user holds nothing for once they hold
//! consents for `templates_per_user` templates. WeChat stacks consents without a limit and
//! a replayed upload adds its consents again, so without the caps a count, and the keys one
//! user costs, would grow without end. A settle's give-back (`campaign_settle.lua`) returns a
//! consent its claim took moments before and is not capped: a user exceeds a cap by at most
//! the consents their attempts in flight hold.
//!
//! Template ids are checked where consents enter (store, [`Bank::release_consent`]:
//! `wxpush_domain::check_template_id`). Reads, claims and clears take any string: it is only
//! ever a key's last part (after the hash tag) or a hash field, and a template no consent
//! could be stored under simply holds none.
//!
//! This module owns those keys' operations. It must not decide when a consent is spent or
//! given back (the send role does, from WeChat's answers), nor call WeChat.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{FromRedisValue, Value};
use wxpush_domain::{check_template_id, AppId, OpenId};

use crate::campaign::parse_campaign_claim;
use crate::keys::shard_of;
use crate::{Bank, BankError, CampaignClaim, ReachableCursor, ReachablePage, SHARDS};

/// How long a user's consents, a template's index shard and a shard's totals live after the
/// last store that touched them: 400 days.
pub const CONSENT_TTL_SECS: u64 = 400 * 24 * 60 * 60;

impl Bank {
    /// `store_consents.lua` for one user: `consents` is template → how many to add, within
    /// [`BankSettings`](crate::BankSettings)' caps. Its reply is [`parse_store_consents`]'s.
    pub(crate) fn store_consents_cmd(
        &self,
        app: &AppId,
        open_id: &OpenId,
        consents: &BTreeMap<&str, u64>,
    ) -> redis::Cmd {
        let mut cmd = self.scripts.store_consents.evalsha();
        cmd.arg(2 + consents.len())
            .arg(self.keys.consents(app, open_id))
            .arg(self.keys.consent_totals(app, shard_of(open_id)));
        for template in consents.keys() {
            cmd.arg(self.keys.consent_index_of(app, open_id, template));
        }
        cmd.arg(open_id.as_str())
            .arg(CONSENT_TTL_SECS)
            .arg(self.settings.consents_per_template)
            .arg(self.settings.templates_per_user);
        for (template, n) in consents {
            cmd.arg(*template).arg(*n);
        }
        cmd
    }

    /// Claims (or resumes) a consent for `template` for `campaign`'s message to `open_id`,
    /// leasing it to `owner` for `lease`: [`Bank::campaign_claim`]'s marks, leases and
    /// answers, with one of the user's consents for `template` instead of a formId. The
    /// credential of `Fresh` and `Held` is `Credential::consent(template)`.
    ///
    /// Settle it with [`Bank::campaign_settle`]: `Final(..)` consumes the consent;
    /// `Release { in_doubt: false, .. }` gives it back to the user (the next attempt takes one
    /// afresh); `Release { in_doubt: true, .. }` keeps it held, and the next attempt gets
    /// `Held { in_doubt: true, .. }`, as does one after a crash.
    #[allow(clippy::too_many_arguments)]
    pub async fn campaign_claim_consent(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        template: &str,
        owner: &str,
        lease: Duration,
        mode: crate::ClaimMode,
    ) -> Result<CampaignClaim, BankError> {
        let shard = shard_of(open_id);
        let mut cmd = self.scripts.campaign_claim_consent.evalsha();
        cmd.arg(5)
            .arg(self.keys.consents(app, open_id))
            .arg(self.keys.consent_index(app, shard, template))
            .arg(self.keys.consent_totals(app, shard))
            .arg(self.keys.marks(app, open_id))
            .arg(self.keys.campaign_counters(app, shard, campaign))
            .arg(open_id.as_str())
            .arg(campaign)
            .arg(owner)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(template)
            .arg(mode.arg());
        let reply: Vec<Value> = self
            .scripts
            .run_applied(&mut self.conn.clone(), &cmd, self.settings.wait_replicas)
            .await?
            .replicated()?;
        parse_campaign_claim(&reply)
    }

    /// Removes every consent `open_id` holds for `template` (WeChat's `43101`: the user has
    /// none left there, ours are stale). Returns how many were removed.
    pub async fn clear_consents(
        &self,
        app: &AppId,
        open_id: &OpenId,
        template: &str,
    ) -> Result<u64, BankError> {
        let cmd = self.clear_consents_cmd(app, open_id, template);
        let removed: i64 = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        Ok(crate::non_negative(removed))
    }

    /// `clear_consents.lua` for one user and template (reply: how many were removed).
    pub(crate) fn clear_consents_cmd(
        &self,
        app: &AppId,
        open_id: &OpenId,
        template: &str,
    ) -> redis::Cmd {
        let shard = shard_of(open_id);
        let mut cmd = self.scripts.clear_consents.evalsha();
        cmd.arg(3)
            .arg(self.keys.consents(app, open_id))
            .arg(self.keys.consent_index(app, shard, template))
            .arg(self.keys.consent_totals(app, shard))
            .arg(open_id.as_str())
            .arg(template);
        cmd
    }

    /// Gives `open_id` back one consent for `template` that WeChat did not use, after the
    /// campaign was settled with `Final` (a permanent refusal). Not guarded: each call adds
    /// one, so call it once per consent taken and refused. (Inside an attempt, a
    /// [`Settle::Release`](crate::Settle::Release) without doubt gives the held consent back,
    /// guarded by the campaign marks.) It goes through the store's caps: `false` when the
    /// user already holds the most consents for `template`, or consents for the most
    /// templates, and the consent is not given back.
    pub async fn release_consent(
        &self,
        app: &AppId,
        open_id: &OpenId,
        template: &str,
    ) -> Result<bool, BankError> {
        check_template_id(template)
            .map_err(|e| BankError::InvalidCredential(format!("a consent's {e}")))?;
        let consents = BTreeMap::from([(template, 1u64)]);
        let cmd = self.store_consents_cmd(app, open_id, &consents);
        let reply: Value = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        let (added, _refused) = parse_store_consents(reply)?;
        Ok(added == 1)
    }

    /// How many consents `open_id` holds for `template` (0 when none).
    pub async fn consents_left(
        &self,
        app: &AppId,
        open_id: &OpenId,
        template: &str,
    ) -> Result<u64, BankError> {
        let n: Option<i64> = redis::cmd("HGET")
            .arg(self.keys.consents(app, open_id))
            .arg(template)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n.map_or(0, crate::non_negative))
    }

    /// Consents held for `template`, summed over the shards' totals, in one pipelined round
    /// trip.
    pub async fn consent_total(&self, app: &AppId, template: &str) -> Result<u64, BankError> {
        let cmds = (0..SHARDS)
            .map(|shard| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(self.keys.consent_totals(app, shard)).arg(template);
                cmd
            })
            .collect();
        let shards: Vec<Option<i64>> = self.read_batch(cmds).await?;
        Ok(shards.into_iter().flatten().map(crate::non_negative).sum())
    }

    /// Reads the next page of users of `app` holding a consent for `template`, walking the
    /// template's [`SHARDS`] index shards in order with `SSCAN`: a page holds about
    /// `page_size` users (fewer, or none, with more still to come); a user may come twice
    /// (consumers are idempotent); memory is one page. The cursor is
    /// [`Bank::reachable_page`]'s, plain data a dispatcher can checkpoint.
    pub async fn consent_page(
        &self,
        app: &AppId,
        template: &str,
        cursor: ReachableCursor,
        page_size: usize,
    ) -> Result<ReachablePage, BankError> {
        let mut conn = self.connection();
        let mut users = Vec::new();
        let mut at = cursor;
        while at.shard < SHARDS && users.len() < page_size {
            let (next, items): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(self.keys.consent_index(app, at.shard, template))
                .arg(at.scan)
                .arg("COUNT")
                .arg(page_size.clamp(10, 1000))
                .query_async(&mut conn)
                .await?;
            users.extend(items.iter().filter_map(|m| OpenId::new(m).ok()));
            if next == 0 {
                at = ReachableCursor {
                    shard: at.shard + 1,
                    scan: 0,
                };
            } else {
                at.scan = next;
            }
        }
        Ok(ReachablePage {
            users,
            next: (at.shard < SHARDS).then_some(at),
        })
    }
}

/// `store_consents.lua`'s reply: (consents added, consents refused by the caps).
pub(crate) fn parse_store_consents(reply: Value) -> Result<(u64, u64), BankError> {
    match Vec::<i64>::from_redis_value(reply).as_deref() {
        Ok([added, refused]) => Ok((crate::non_negative(*added), crate::non_negative(*refused))),
        other => Err(BankError::Protocol(format!(
            "store_consents returned {other:?}"
        ))),
    }
}
