//! Subscribe consents: counted per user and template in shared buckets, totalled and counted
//! per template and shard.
//!
//! A consent allows one subscribe message for one template, at any time: it has no value of
//! its own and no expiry, so it is not a member of the user's credential zset but a count.
//! Per index shard (hash tag `{<app>.<shard>}`, the user's slot):
//! - `{ns}:sb:{<app>.<shard>}:<bucket>`, [`CONSENT_BUCKETS`] hashes: openId → the user's
//!   counts, by the shard's template numbers (`'1,3*2'`: one consent for template 1, two for
//!   template 3; a user holding nothing has no field). The bucket is [`bucket_of`](crate::keys::bucket_of) the openId.
//! - `{ns}:tn:{<app>.<shard>}` hash, the shard's template dictionary: templateId → number,
//!   `" <number>"` → templateId, `" #"` → the last number given (never reused).
//! - `{ns}:tc:{<app>.<shard>}` hash, templateId → consents the shard's users hold;
//! - `{ns}:th:{<app>.<shard>}` hash, templateId → the shard's users holding ≥ 1.
//!
//! Why: a key of its own per user cost ~196 bytes a consent (the key, its TTL entry, and each
//! user again in every template's index set, a hashtable on Redis 7.0); a field of a bucket
//! with a short value costs a few tens, and the buckets, the dictionary and the counters stay
//! in Redis's listpack encoding at the server's defaults (512 fields of ≤ 64 bytes): 8 buckets
//! a shard keep that up to ~4 million consent holders an app, a value a dozen templates and
//! more. There is no per-template index any more: [`Bank::consent_page`] walks the shard's
//! buckets and keeps the holders of the template (`lua/consent_page.lua`, read only), so a
//! walk reads every consent holder of the app, and skips a shard whose dictionary does not
//! know the template. `wxpush reach` reads the totals and holders hashes.
//!
//! Every change goes through one script that changes the bucket, the totals and the holders
//! together (store, campaign claim, settle's give-back, clear; `lua/consent_lib.lua` is their
//! shared part), so the totals and holders stay exact however many processes claim at once.
//! The bucket, the dictionary, the totals and the holders live 400 days
//! ([`CONSENT_TTL_SECS`]) after the last store that touched them: consents do not expire in
//! WeChat, the TTL only reclaims abandoned data. Redis 7.0 has no expiry per hash field
//! (HEXPIRE is 7.4's), so an abandoned user in a bucket others still store into is kept
//! until a send meets WeChat's 43101 and clears it ([`Bank::clear_consents`]).
//!
//! The layout before buckets (`{ns}:s:{<app>.<shard>}:<openId>` hash per user and
//! `{ns}:t:{<app>.<shard>}:<templateId>` index sets; the same totals) is moved lazily: every
//! script writing a user's consents answers `migrate` without changing anything while the
//! user's old hash exists, and the bank then moves them (`lua/consent_migrate.lua`: into the
//! bucket, out of the old sets, into the holders) and runs the script again. Reads add the
//! old hash ([`Bank::consents_left`]), the old sets (`consent_page` walks them first in each
//! shard) and the old sets' sizes (holders, in `wxpush reach`) until nothing is left there.
//!
//! What enters is bounded ([`crate::BankSettings`]): a store, and a give-back through
//! [`Bank::release_consent`], adds at most what brings the user's count for a template to
//! `consents_per_template`, and none for a template the user holds nothing for once they hold
//! consents for `templates_per_user` templates. WeChat stacks consents without a limit and
//! a replayed upload adds its consents again, so without the caps a count, and the bytes one
//! user costs, would grow without end. A settle's give-back (`campaign_settle.lua`) returns a
//! consent its claim took moments before and is not capped: a user exceeds a cap by at most
//! the consents their attempts in flight hold.
//!
//! Template ids are checked where consents enter (store, [`Bank::release_consent`]:
//! `wxpush_domain::check_template_id`). Reads, claims and clears take any string: it is only
//! ever a key's last part (after the hash tag) or a hash field, and a template no consent
//! could be stored under simply holds none (it has no number in any dictionary).
//!
//! This module owns those keys' operations. It must not decide when a consent is spent or
//! given back (the send role does, from WeChat's answers), nor call WeChat.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{FromRedisValue, Value};
use wxpush_domain::{check_template_id, AppId, OpenId};

use crate::campaign::parse_campaign_claim;
use crate::keys::{shard_of, CONSENT_BUCKETS};
use crate::{Applied, Bank, BankError, CampaignClaim, ReachableCursor, ReachablePage, SHARDS};

/// How long a consent bucket, a shard's template dictionary, totals and holders live after
/// the last store that touched them: 400 days.
pub const CONSENT_TTL_SECS: u64 = 400 * 24 * 60 * 60;

/// A walk's cursor within a shard ([`ReachableCursor::scan`]): the phase (0: the old index
/// set, b ≥ 1: bucket b - 1) above this bit, that phase's SSCAN/HSCAN cursor below it.
const PHASE_SHIFT: u32 = 48;

/// How many times a write is run again after moving the user's consents out of the layout
/// before buckets (another process's old version may write it meanwhile during an upgrade).
const MIGRATE_TRIES: usize = 5;

/// The reply of a consent script while the user's consents are in the layout before buckets.
fn wants_migration(reply: &Value) -> bool {
    match reply {
        Value::BulkString(b) => b.as_slice() == b"migrate",
        Value::SimpleString(s) => s == "migrate",
        _ => false,
    }
}

impl Bank {
    /// `store_consents.lua` for one user: `consents` is template → how many to add, within
    /// [`BankSettings`](crate::BankSettings)' caps. Its reply is [`parse_store_consents`]'s.
    pub(crate) fn store_consents_cmd(
        &self,
        app: &AppId,
        open_id: &OpenId,
        consents: &BTreeMap<&str, u64>,
    ) -> redis::Cmd {
        let shard = shard_of(open_id);
        let mut cmd = self.scripts.store_consents.evalsha();
        cmd.arg(5)
            .arg(self.keys.consent_bucket(app, open_id))
            .arg(self.keys.consent_numbers(app, shard))
            .arg(self.keys.consent_totals(app, shard))
            .arg(self.keys.consent_holders(app, shard))
            .arg(self.keys.legacy_consents(app, open_id))
            .arg(open_id.as_str())
            .arg(CONSENT_TTL_SECS)
            .arg(self.settings.consents_per_template)
            .arg(self.settings.templates_per_user);
        for (template, n) in consents {
            cmd.arg(*template).arg(*n);
        }
        cmd
    }

    /// Moves `open_id`'s consents out of the layout before buckets (`consent_migrate.lua`),
    /// if any are left there.
    pub(crate) async fn migrate_consents(
        &self,
        app: &AppId,
        open_id: &OpenId,
    ) -> Result<(), BankError> {
        let shard = shard_of(open_id);
        let old = self.keys.legacy_consents(app, open_id);
        for _ in 0..MIGRATE_TRIES {
            let templates: Vec<Vec<u8>> = redis::cmd("HKEYS")
                .arg(&old)
                .query_async(&mut self.conn.clone())
                .await?;
            let mut cmd = self.scripts.consent_migrate.evalsha();
            cmd.arg(4 + templates.len())
                .arg(&old)
                .arg(self.keys.consent_bucket(app, open_id))
                .arg(self.keys.consent_numbers(app, shard))
                .arg(self.keys.consent_holders(app, shard));
            for t in &templates {
                let t = String::from_utf8_lossy(t);
                cmd.arg(self.keys.legacy_consent_index(app, shard, &t));
            }
            cmd.arg(open_id.as_str()).arg(CONSENT_TTL_SECS);
            for t in &templates {
                cmd.arg(t.as_slice());
            }
            let moved: i64 = self
                .scripts
                .run_applied(&mut self.conn.clone(), &cmd, self.settings.wait_replicas)
                .await?
                .replicated()?;
            if moved == 1 {
                return Ok(());
            }
        }
        Err(BankError::Protocol(format!(
            "the old consent hash of {open_id} kept changing while it was moved into its bucket"
        )))
    }

    /// Runs a consent script writing `open_id`'s consents (`cmd`, with `WAIT` for the replicas
    /// asked for); on `migrate`, moves the user's consents out of the old layout and runs it
    /// again. The script's reply.
    async fn run_consent_write(
        &self,
        app: &AppId,
        open_id: &OpenId,
        cmd: &redis::Cmd,
    ) -> Result<Applied<Value>, BankError> {
        for _ in 0..MIGRATE_TRIES {
            let applied: Applied<Value> = self
                .scripts
                .run_applied(&mut self.conn.clone(), cmd, self.settings.wait_replicas)
                .await?;
            if !wants_migration(&applied.value) {
                return Ok(applied);
            }
            self.migrate_consents(app, open_id).await?;
        }
        Err(BankError::Protocol(format!(
            "the consents of {open_id} stayed in the old layout after {MIGRATE_TRIES} moves"
        )))
    }

    /// [`Bank::store_batch`]'s consent store for a user whose batched call answered
    /// `migrate`: moves them and stores again. (added, refused by the caps).
    pub(crate) async fn store_consents_again(
        &self,
        app: &AppId,
        open_id: &OpenId,
        consents: &BTreeMap<&str, u64>,
    ) -> Result<Applied<(u64, u64)>, BankError> {
        let cmd = self.store_consents_cmd(app, open_id, consents);
        let applied = self.run_consent_write(app, open_id, &cmd).await?;
        let value = parse_store_consents(applied.value)?.ok_or_else(|| {
            BankError::Protocol("store_consents asked to migrate after the move".into())
        })?;
        Ok(Applied {
            value,
            replicated: applied.replicated,
        })
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
        self.campaign_claim_consent_with(
            app,
            open_id,
            campaign,
            template,
            owner,
            lease,
            mode,
            crate::ClaimExtras::default(),
        )
        .await
        .map(|(claim, _)| claim)
    }

    /// [`Bank::campaign_claim_consent`], with its [`crate::ClaimExtras`], as
    /// [`Bank::campaign_claim_with`].
    #[allow(clippy::too_many_arguments)]
    pub async fn campaign_claim_consent_with(
        &self,
        app: &AppId,
        open_id: &OpenId,
        campaign: &str,
        template: &str,
        owner: &str,
        lease: Duration,
        mode: crate::ClaimMode,
        extras: crate::ClaimExtras<'_>,
    ) -> Result<(CampaignClaim, Option<String>), BankError> {
        let shard = shard_of(open_id);
        let mut cmd = self.scripts.campaign_claim_consent.evalsha();
        cmd.arg(9)
            .arg(self.keys.consent_bucket(app, open_id))
            .arg(self.keys.consent_numbers(app, shard))
            .arg(self.keys.consent_totals(app, shard))
            .arg(self.keys.consent_holders(app, shard))
            .arg(self.keys.marks(app, open_id))
            .arg(self.counters_of(app, open_id, campaign))
            .arg(self.keys.legacy_consents(app, open_id))
            .arg(&self.receipt_keys(app, open_id)[..])
            .arg(open_id.as_str())
            .arg(campaign)
            .arg(owner)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(template)
            .arg(mode.arg())
            .arg(&Self::receipt_args(extras.receipt)[..])
            .arg(Self::cap_arg(extras.cap));
        let (applied, bound) = match extras.bind {
            Some(id) => {
                let (applied, bound) = self.run_with_binding(app, open_id, id, &cmd).await?;
                // Bound already: a claim that asks to move the user's consents runs again
                // alone once they are moved.
                let applied = if wants_migration(&applied.value) {
                    self.run_consent_write(app, open_id, &cmd).await?
                } else {
                    applied
                };
                (applied, Some(bound))
            }
            None => (self.run_consent_write(app, open_id, &cmd).await?, None),
        };
        let reply = Vec::<Value>::from_redis_value(applied.replicated()?)
            .map_err(|e| BankError::Protocol(format!("campaign_claim_consent: {e}")))?;
        Ok((parse_campaign_claim(&reply)?, bound))
    }

    /// `campaign_settle.lua`, run again after moving the user's consents out of the old
    /// layout when it answers `migrate`: 1 if applied, 0 if not.
    pub(crate) async fn run_settle(
        &self,
        app: &AppId,
        open_id: &OpenId,
        cmd: &redis::Cmd,
    ) -> Result<i64, BankError> {
        let reply = self
            .run_consent_write(app, open_id, cmd)
            .await?
            .replicated()?;
        i64::from_redis_value(reply)
            .map_err(|e| BankError::Protocol(format!("campaign_settle: {e}")))
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
        // Not waited for (as before buckets): a clear lost in a failover only leaves stale
        // consents, which the next send's 43101 clears again.
        let removed = run_clear(self, app, open_id, &cmd).await?;
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
        cmd.arg(5)
            .arg(self.keys.consent_bucket(app, open_id))
            .arg(self.keys.consent_numbers(app, shard))
            .arg(self.keys.consent_totals(app, shard))
            .arg(self.keys.consent_holders(app, shard))
            .arg(self.keys.legacy_consents(app, open_id))
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
        let mut conn = self.conn.clone();
        for _ in 0..MIGRATE_TRIES {
            let reply: Value = self.scripts.run(&mut conn, &cmd).await?;
            if let Some((added, _refused)) = parse_store_consents(reply)? {
                return Ok(added == 1);
            }
            self.migrate_consents(app, open_id).await?;
        }
        Err(BankError::Protocol(format!(
            "the consents of {open_id} stayed in the old layout after {MIGRATE_TRIES} moves"
        )))
    }

    /// How many consents `open_id` holds for `template` (0 when none).
    pub async fn consents_left(
        &self,
        app: &AppId,
        open_id: &OpenId,
        template: &str,
    ) -> Result<u64, BankError> {
        Ok(self
            .consents_of(app, open_id)
            .await?
            .get(template)
            .copied()
            .unwrap_or(0))
    }

    /// Every consent `open_id` holds: template → count (in either layout: a user not yet
    /// moved out of the layout before buckets is read there too). One round trip.
    pub async fn consents_of(
        &self,
        app: &AppId,
        open_id: &OpenId,
    ) -> Result<BTreeMap<String, u64>, BankError> {
        let shard = shard_of(open_id);
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.keys.consent_bucket(app, open_id))
            .arg(open_id.as_str());
        pipe.cmd("HGETALL")
            .arg(self.keys.consent_numbers(app, shard));
        pipe.cmd("HGETALL")
            .arg(self.keys.legacy_consents(app, open_id));
        let (value, numbers, old): (
            Option<String>,
            BTreeMap<String, String>,
            BTreeMap<String, i64>,
        ) = self
            .scripts
            .run_pipeline(&mut self.conn.clone(), &pipe)
            .await?;
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        for (num, n) in decode_counts(value.as_deref().unwrap_or("")) {
            let template = numbers.get(&format!(" {num}")).ok_or_else(|| {
                BankError::Protocol(format!(
                    "consent bucket of {open_id} names template number {num}, unknown to its \
                     shard's dictionary"
                ))
            })?;
            *held.entry(template.clone()).or_default() += n;
        }
        for (template, n) in old {
            if n > 0 {
                *held.entry(template).or_default() += crate::non_negative(n);
            }
        }
        Ok(held)
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

    /// Users of `app` holding ≥ 1 consent for `template`: the shards' holders hashes plus
    /// the sizes of the old layout's index sets, in one pipelined round trip per shard batch.
    pub async fn consent_holders(&self, app: &AppId, template: &str) -> Result<u64, BankError> {
        let mut cmds = Vec::with_capacity(usize::from(SHARDS) * 2);
        for shard in 0..SHARDS {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(self.keys.consent_holders(app, shard)).arg(template);
            cmds.push(cmd);
            let mut cmd = redis::cmd("SCARD");
            cmd.arg(self.keys.legacy_consent_index(app, shard, template));
            cmds.push(cmd);
        }
        let read: Vec<Option<i64>> = self.read_batch(cmds).await?;
        Ok(read.into_iter().flatten().map(crate::non_negative).sum())
    }

    /// Reads the next page of users of `app` holding a consent for `template`, walking the
    /// [`SHARDS`] shards in order, in each the old layout's index set (`SSCAN`) and then the
    /// [`CONSENT_BUCKETS`] buckets (`HSCAN`, keeping the template's holders), one read-only
    /// script call a step: a page holds about `page_size` users (fewer, or none, with more
    /// still to come); a user may come twice (consumers are idempotent); memory is one page.
    /// The cursor is [`Bank::reachable_page`]'s, plain data a dispatcher can checkpoint (its
    /// `scan` holds the step within the shard).
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
        let mask = (1u64 << PHASE_SHIFT) - 1;
        while at.shard < SHARDS && users.len() < page_size {
            let phase = at.scan >> PHASE_SHIFT;
            if phase > u64::from(CONSENT_BUCKETS) {
                at = ReachableCursor {
                    shard: at.shard + 1,
                    scan: 0,
                };
                continue;
            }
            let mut cmd = self.scripts.consent_page.evalsha();
            cmd.arg(2 + usize::from(CONSENT_BUCKETS))
                .arg(self.keys.consent_numbers(app, at.shard))
                .arg(self.keys.legacy_consent_index(app, at.shard, template));
            for b in 0..CONSENT_BUCKETS {
                cmd.arg(self.keys.consent_bucket_in(app, at.shard, b));
            }
            cmd.arg(template)
                .arg(phase)
                .arg(at.scan & mask)
                .arg(page_size.clamp(10, 1000));
            let reply: Vec<String> = self.scripts.run(&mut conn, &cmd).await?;
            let (next_phase, next_scan) = match reply.as_slice() {
                [p, c, ..] => (p.parse::<u64>().ok(), c.parse::<u64>().ok()),
                _ => (None, None),
            };
            let (Some(next_phase), Some(next_scan)) = (next_phase, next_scan) else {
                return Err(BankError::Protocol(format!(
                    "consent_page returned {:?}",
                    reply.get(..2)
                )));
            };
            if next_scan > mask || next_phase > u64::from(CONSENT_BUCKETS) + 1 {
                return Err(BankError::Protocol(format!(
                    "consent_page's cursor {next_phase}:{next_scan} does not fit a walk's cursor"
                )));
            }
            users.extend(reply[2..].iter().filter_map(|m| OpenId::new(m).ok()));
            at = if next_phase > u64::from(CONSENT_BUCKETS) {
                ReachableCursor {
                    shard: at.shard + 1,
                    scan: 0,
                }
            } else {
                ReachableCursor {
                    shard: at.shard,
                    scan: (next_phase << PHASE_SHIFT) | next_scan,
                }
            };
        }
        Ok(ReachablePage {
            users,
            next: (at.shard < SHARDS).then_some(at),
        })
    }
}

/// Runs `clear_consents.lua`, moving the user out of the old layout on `migrate`.
async fn run_clear(
    bank: &Bank,
    app: &AppId,
    open_id: &OpenId,
    cmd: &redis::Cmd,
) -> Result<i64, BankError> {
    let mut conn = bank.conn.clone();
    for _ in 0..MIGRATE_TRIES {
        let reply: Value = bank.scripts.run(&mut conn, cmd).await?;
        if !wants_migration(&reply) {
            return i64::from_redis_value(reply)
                .map_err(|e| BankError::Protocol(format!("clear_consents: {e}")));
        }
        bank.migrate_consents(app, open_id).await?;
    }
    Err(BankError::Protocol(format!(
        "the consents of {open_id} stayed in the old layout after {MIGRATE_TRIES} moves"
    )))
}

/// A bucket's value: (template number, count) for each template listed (see
/// `lua/consent_lib.lua`); an entry that is not one is skipped.
pub(crate) fn decode_counts(value: &str) -> Vec<(u64, u64)> {
    value
        .split(',')
        .filter_map(|e| match e.split_once('*') {
            Some((n, c)) => Some((n.parse().ok()?, c.parse().ok()?)),
            None => Some((e.parse().ok()?, 1)),
        })
        .collect()
}

/// `store_consents.lua`'s reply: (consents added, consents refused by the caps), or `None`
/// when the user's consents are still to be moved out of the layout before buckets.
pub(crate) fn parse_store_consents(reply: Value) -> Result<Option<(u64, u64)>, BankError> {
    if wants_migration(&reply) {
        return Ok(None);
    }
    match Vec::<i64>::from_redis_value(reply).as_deref() {
        Ok([added, refused]) => Ok(Some((
            crate::non_negative(*added),
            crate::non_negative(*refused),
        ))),
        other => Err(BankError::Protocol(format!(
            "store_consents returned {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buckets_value_reads_as_numbers_and_counts() {
        assert_eq!(decode_counts("1,3*2,12*50"), vec![(1, 1), (3, 2), (12, 50)]);
        assert_eq!(decode_counts(""), vec![]);
        assert_eq!(decode_counts("x,2,*,4*y"), vec![(2, 1)]);
    }

    #[test]
    fn only_the_word_migrate_asks_for_a_move() {
        assert!(wants_migration(&Value::BulkString(b"migrate".to_vec())));
        assert!(!wants_migration(&Value::Int(0)));
        assert!(!wants_migration(&Value::BulkString(b"fresh".to_vec())));
        assert!(parse_store_consents(Value::BulkString(b"migrate".to_vec()))
            .unwrap()
            .is_none());
    }
}
