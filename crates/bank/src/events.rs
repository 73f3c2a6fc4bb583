//! WeChat's own consent events (contract §8.4) applied to the bank at most once each, and the
//! message push's nonces remembered for replay protection.
//!
//! An event is applied through the very scripts uploads and WeChat's `43101` use
//! (`store_consents.lua`, `clear_consents.lua`), each wrapped by `once_per_event` into a
//! script that first looks for the event's mark (`{ns}:ev:{<app>.<shard>}:<openId>:<event>`,
//! in the user's slot), runs the wrapped script only when there is none, and then sets the
//! mark, all in one script run: Redis runs it whole or not at all, so no crash of the caller
//! can leave the change applied without its mark (a retried push would apply it twice) or the
//! mark without the change (the retry would be taken for done). The wrapped script is the
//! bank's own, unchanged, so the consent layout stays `consent.rs`'s alone.
//!
//! This module owns the event marks and the push nonces. It must not read pushes, check
//! signatures or decide which event changes what (the events role does).

use std::collections::BTreeMap;

use redis::{Cmd, FromRedisValue, Value};
use wxpush_domain::{check_template_id, AppId, OpenId};

use crate::{Bank, BankError};

/// How long an applied event is remembered: an hour (the contract asks for at least 10
/// minutes; WeChat retries within seconds).
pub const EVENT_MARK_TTL_SECS: u64 = 3600;

/// How long a message push nonce is remembered: 15 minutes, longer than the whole window of
/// timestamps the events role accepts (±5 minutes), so a replay inside the window is always
/// recognised.
pub const PUSH_NONCE_TTL_SECS: u64 = 900;

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventApplied {
    /// Applied now: consents added (refused by the caps not counted), or removed.
    Applied { changed: u64 },
    /// Its mark was there: applied before (a retried push), nothing changed.
    Repeated,
}

/// `inner` (a bank script taking `KEYS` and `ARGV`) run at most once per event: the mark's key
/// comes last in `KEYS` and its TTL last in `ARGV`, both taken off before `inner` runs, so
/// `inner` sees exactly the keys and arguments it always does. Returns `{0}` when the mark was
/// there (nothing run), `{2}` when `inner` answered `migrate` (the user's consents are in the
/// layout before buckets: nothing changed, no mark set; the caller moves them and runs it
/// again), else `{1, <inner's reply>}`.
pub(crate) fn once_per_event(inner: &str) -> String {
    format!(
        "-- Run at most once per event (wxpush-bank events.rs): the mark is KEYS[#KEYS], its TTL \
         ARGV[#ARGV].\n\
         local event_mark, event_mark_ttl = KEYS[#KEYS], ARGV[#ARGV]\n\
         KEYS[#KEYS] = nil\n\
         ARGV[#ARGV] = nil\n\
         if redis.call('EXISTS', event_mark) == 1 then\n  return {{0}}\nend\n\
         local function event_inner()\n{inner}\nend\n\
         local event_reply = event_inner()\n\
         if event_reply == 'migrate' then\n  return {{2}}\nend\n\
         redis.call('SET', event_mark, '1', 'EX', event_mark_ttl)\n\
         return {{1, event_reply}}\n"
    )
}

/// `inner` (an `EVALSHA` of a bank script) as an `EVALSHA` of `guarded`, its
/// [`once_per_event`] form, with `mark` and `ttl` appended.
fn guarded_cmd(
    guarded: &wxpush_redis::Lua,
    inner: &Cmd,
    mark: String,
    ttl: u64,
) -> Result<Cmd, BankError> {
    let args: Vec<&[u8]> = inner
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let bad = || BankError::Protocol("an event's script command is not an EVALSHA".into());
    let numkeys: usize = args
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let keys = args.get(3..3 + numkeys).ok_or_else(bad)?;
    let mut cmd = guarded.evalsha();
    cmd.arg(numkeys + 1);
    for k in keys {
        cmd.arg(*k);
    }
    cmd.arg(mark);
    for a in &args[3 + numkeys..] {
        cmd.arg(*a);
    }
    cmd.arg(ttl);
    Ok(cmd)
}

/// The reply of a [`once_per_event`] script: `Repeated`, or `Applied` with `inner`'s reply;
/// `None` when the user's consents must first be moved out of the layout before buckets.
fn guarded_reply(reply: Value) -> Result<Option<(bool, Option<Value>)>, BankError> {
    let mut parts = Vec::<Value>::from_redis_value(reply)
        .map_err(|e| BankError::Protocol(format!("an event script's reply: {e}")))?
        .into_iter();
    match parts.next() {
        Some(Value::Int(0)) => Ok(Some((false, None))),
        Some(Value::Int(1)) => Ok(Some((true, parts.next()))),
        Some(Value::Int(2)) => Ok(None),
        other => Err(BankError::Protocol(format!(
            "an event script returned {other:?}"
        ))),
    }
}

impl Bank {
    /// Adds `consents` (template → how many) to `open_id` for WeChat event `event` (its own
    /// key: sender, `CreateTime` and type, [`crate::Keys::event_mark`]), within the bank's
    /// caps, unless that event was applied already. One script in the user's slot: applied
    /// and marked together, or neither.
    pub async fn event_add_consents(
        &self,
        app: &AppId,
        open_id: &OpenId,
        event: &str,
        consents: &BTreeMap<&str, u64>,
    ) -> Result<EventApplied, BankError> {
        for template in consents.keys() {
            check_template_id(template)
                .map_err(|e| BankError::InvalidCredential(format!("a consent's {e}")))?;
        }
        if consents.is_empty() {
            return Ok(EventApplied::Applied { changed: 0 });
        }
        let inner = self.store_consents_cmd(app, open_id, consents);
        let cmd = guarded_cmd(
            &self.scripts.event_store_consents,
            &inner,
            self.keys.event_mark(app, open_id, event),
            EVENT_MARK_TTL_SECS,
        )?;
        let reply = self.run_guarded(app, open_id, &cmd).await?;
        match reply {
            (false, _) => Ok(EventApplied::Repeated),
            (true, Some(inner)) => {
                let (added, _refused) = crate::consent::parse_store_consents(inner)?
                    .ok_or_else(|| BankError::Protocol("an event store asked to migrate".into()))?;
                Ok(EventApplied::Applied { changed: added })
            }
            (true, None) => Err(BankError::Protocol("an event store has no reply".into())),
        }
    }

    /// Removes every consent `open_id` holds for `template` (the operation WeChat's `43101`
    /// uses) for WeChat event `event`, unless that event was applied already for that template.
    pub async fn event_clear_consents(
        &self,
        app: &AppId,
        open_id: &OpenId,
        event: &str,
        template: &str,
    ) -> Result<EventApplied, BankError> {
        let inner = self.clear_consents_cmd(app, open_id, template);
        let cmd = guarded_cmd(
            &self.scripts.event_clear_consents,
            &inner,
            self.keys
                .event_mark(app, open_id, &format!("{event}:{template}")),
            EVENT_MARK_TTL_SECS,
        )?;
        let reply = self.run_guarded(app, open_id, &cmd).await?;
        match reply {
            (false, _) => Ok(EventApplied::Repeated),
            (true, Some(Value::Int(n))) => Ok(EventApplied::Applied {
                changed: crate::non_negative(n),
            }),
            (true, other) => Err(BankError::Protocol(format!(
                "an event clear returned {other:?}"
            ))),
        }
    }

    /// Runs a [`once_per_event`] command, moving the user's consents out of the layout before
    /// buckets first when it asks ([`Bank::migrate_consents`]), a few times at most.
    async fn run_guarded(
        &self,
        app: &AppId,
        open_id: &OpenId,
        cmd: &Cmd,
    ) -> Result<(bool, Option<Value>), BankError> {
        for _ in 0..5 {
            let reply: Value = self
                .scripts
                .run_applied(&mut self.conn.clone(), cmd, self.settings.wait_replicas)
                .await?
                .replicated()?;
            match guarded_reply(reply)? {
                Some(r) => return Ok(r),
                None => self.migrate_consents(app, open_id).await?,
            }
        }
        Err(BankError::Protocol(format!(
            "the consents of {open_id} stayed in the old layout after 5 moves"
        )))
    }

    /// Remembers a message push nonce of `app` for [`PUSH_NONCE_TTL_SECS`]: `false` when it
    /// was seen already (a replayed request).
    pub async fn remember_push_nonce(&self, app: &AppId, nonce: &str) -> Result<bool, BankError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.push_nonce(app, nonce))
            .arg("1")
            .arg("NX")
            .arg("EX")
            .arg(PUSH_NONCE_TTL_SECS)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }

    /// Forgets a nonce [`Bank::remember_push_nonce`] took for a request that then failed on
    /// our side, so that WeChat's retry with the same nonce is not taken for a replay.
    pub async fn forget_push_nonce(&self, app: &AppId, nonce: &str) -> Result<(), BankError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.push_nonce(app, nonce))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
