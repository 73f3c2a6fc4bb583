//! The bank's Lua scripts (`lua/*.lua`) and how they are run.
//!
//! Scripts are sent by SHA (`EVALSHA`), also inside pipelines, through `wxpush-redis`, which
//! loads them all and sends the command or pipeline once more on `NOSCRIPT` (a restarted or
//! flushed node, a newly promoted replica): safe because every bank script is idempotent or
//! atomic, and a missing script did not run. With replicas asked for (`WXPUSH_REDIS_WAIT_REPLICAS`), a write is
//! followed by `WAIT` in the same pipeline (no extra round trip), and a shortfall is reported
//! apart from the write's reply ([`Applied`]). This module must not decide what the scripts
//! mean.

use std::sync::OnceLock;

use redis::{Cmd, FromRedisValue, Pipeline, Value};
use wxpush_redis::{Conn, Lua};

use crate::{BankError, NotReplicated};

/// How long one `WAIT` waits for the replicas asked for. It blocks the bank's (multiplexed)
/// connection meanwhile, so it is short: a replica that is down fails writes quickly, and the
/// role hands its messages back and waits (see docs/operations.md#redis-for-production).
pub const WAIT_TIMEOUT_MS: u64 = 1000;

/// A write Redis applied, and whether the replicas asked for acknowledged it in time.
#[derive(Debug)]
pub struct Applied<T> {
    pub value: T,
    pub replicated: Result<(), NotReplicated>,
}

impl<T> Applied<T> {
    /// The value if the replicas acknowledged it, else [`BankError::NotReplicated`].
    pub fn replicated(self) -> Result<T, BankError> {
        self.replicated?;
        Ok(self.value)
    }
}

/// `WAIT wanted timeout`; `None` when `wanted` is 0.
pub(crate) fn wait_cmd(wanted: u32) -> Option<Cmd> {
    (wanted > 0).then(|| {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wanted).arg(WAIT_TIMEOUT_MS);
        cmd
    })
}

/// Appends [`wait_cmd`] to `pipe` (nothing when `wanted` is 0).
pub(crate) fn add_wait(pipe: &mut Pipeline, wanted: u32) {
    if let Some(wait) = wait_cmd(wanted) {
        pipe.add_command(wait);
    }
}

/// Takes the `WAIT` reply off the end of `replies` (when `wanted` > 0) and checks it.
pub(crate) fn check_wait(
    replies: &mut Vec<Value>,
    wanted: u32,
) -> Result<Result<(), NotReplicated>, BankError> {
    if wanted == 0 {
        return Ok(Ok(()));
    }
    let acked = match replies.pop() {
        Some(Value::Int(n)) => u32::try_from(n).unwrap_or(0),
        other => return Err(BankError::Protocol(format!("WAIT returned {other:?}"))),
    };
    if acked >= wanted {
        Ok(Ok(()))
    } else {
        Ok(Err(NotReplicated {
            wanted,
            acked,
            timeout_ms: WAIT_TIMEOUT_MS,
        }))
    }
}

pub(crate) type BankScript = Lua;

pub(crate) struct Scripts {
    pub(crate) store: BankScript,
    pub(crate) claim: BankScript,
    pub(crate) release: BankScript,
    pub(crate) campaign_claim: BankScript,
    pub(crate) campaign_settle: BankScript,
    pub(crate) store_consents: BankScript,
    pub(crate) clear_consents: BankScript,
    pub(crate) campaign_claim_consent: BankScript,
    pub(crate) consent_migrate: BankScript,
    pub(crate) consent_page: BankScript,
    pub(crate) campaign_requeue: BankScript,
    pub(crate) campaign_outcome: BankScript,
    pub(crate) receipt_delivery: BankScript,
    pub(crate) message_bind: BankScript,
    pub(crate) record_open: BankScript,
    pub(crate) record_write: BankScript,
    pub(crate) record_stop: BankScript,
    pub(crate) record_control: BankScript,
    /// `store_consents.lua` applied once per WeChat event (`crate::events`).
    pub(crate) event_store_consents: BankScript,
    /// `clear_consents.lua` applied once per WeChat event (`crate::events`).
    pub(crate) event_clear_consents: BankScript,
}

pub(crate) fn get() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        store: Lua::new(include_str!("lua/store.lua")),
        claim: Lua::new(include_str!("lua/claim.lua")),
        release: Lua::new(include_str!("lua/release.lua")),
        campaign_claim: Lua::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_claim.lua")
        )),
        campaign_settle: Lua::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/campaign_settle.lua")
        )),
        store_consents: Lua::new(concat!(
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/store_consents.lua")
        )),
        clear_consents: Lua::new(concat!(
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/clear_consents.lua")
        )),
        campaign_claim_consent: Lua::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/campaign_claim_consent.lua")
        )),
        consent_migrate: Lua::new(concat!(
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/consent_migrate.lua")
        )),
        consent_page: Lua::new(include_str!("lua/consent_page.lua")),
        campaign_requeue: Lua::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_requeue.lua")
        )),
        campaign_outcome: Lua::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_outcome.lua")
        )),
        receipt_delivery: Lua::new(include_str!("lua/receipt_delivery.lua")),
        message_bind: Lua::new(include_str!("lua/message_bind.lua")),
        // The record's field names come from record.rs (`crate::record::lua_prelude`).
        record_open: Lua::new(&crate::record::with_prelude(include_str!(
            "lua/record_open.lua"
        ))),
        record_write: Lua::new(&crate::record::with_prelude(include_str!(
            "lua/record_write.lua"
        ))),
        record_stop: Lua::new(&crate::record::with_prelude(include_str!(
            "lua/record_stop.lua"
        ))),
        record_control: Lua::new(&crate::record::with_prelude(include_str!(
            "lua/record_control.lua"
        ))),
        event_store_consents: Lua::new(&crate::events::once_per_event(concat!(
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/store_consents.lua")
        ))),
        event_clear_consents: Lua::new(&crate::events::once_per_event(concat!(
            include_str!("lua/consent_lib.lua"),
            include_str!("lua/clear_consents.lua")
        ))),
    })
}

impl Scripts {
    fn all(&self) -> [&Lua; 20] {
        [
            &self.store,
            &self.claim,
            &self.release,
            &self.campaign_claim,
            &self.campaign_settle,
            &self.store_consents,
            &self.clear_consents,
            &self.campaign_claim_consent,
            &self.consent_migrate,
            &self.consent_page,
            &self.campaign_requeue,
            &self.campaign_outcome,
            &self.receipt_delivery,
            &self.message_bind,
            &self.record_open,
            &self.record_write,
            &self.record_stop,
            &self.record_control,
            &self.event_store_consents,
            &self.event_clear_consents,
        ]
    }

    pub(crate) async fn load_all(&self, conn: &mut Conn) -> Result<(), BankError> {
        Ok(wxpush_redis::load(conn, &self.all()).await?)
    }

    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        cmd: &Cmd,
    ) -> Result<T, BankError> {
        Ok(wxpush_redis::run(conn, cmd, &self.all()).await?)
    }

    /// Runs one script command followed by `WAIT` for `wanted` replicas, in one pipeline.
    pub(crate) async fn run_applied<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        cmd: &Cmd,
        wanted: u32,
    ) -> Result<Applied<T>, BankError> {
        if wanted == 0 {
            return Ok(Applied {
                value: self.run(conn, cmd).await?,
                replicated: Ok(()),
            });
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        add_wait(&mut pipe, wanted);
        let mut replies: Vec<Value> = self.run_pipeline(conn, &pipe).await?;
        let replicated = check_wait(&mut replies, wanted)?;
        let reply = match replies.pop() {
            Some(v) if replies.is_empty() => v,
            _ => return Err(BankError::Protocol("a script's reply is missing".into())),
        };
        let value = T::from_redis_value(reply)
            .map_err(|e| BankError::Protocol(format!("a script's reply: {e}")))?;
        Ok(Applied { value, replicated })
    }

    /// Runs many one-slot commands ([`wxpush_redis::run_batch`]) followed by `WAIT` for
    /// `wanted` replicas (on a cluster, once, on every primary); the replies in order, and
    /// whether the `WAIT` was met.
    pub(crate) async fn run_batch(
        &self,
        conn: &Conn,
        cmds: Vec<Cmd>,
        wanted: u32,
    ) -> Result<(Vec<Value>, Result<(), NotReplicated>), BankError> {
        let wait = wait_cmd(wanted);
        let batch = wxpush_redis::run_batch(conn, cmds, wait.as_ref(), &self.all()).await?;
        let replicated = check_wait(&mut batch.tail.into_iter().collect(), wanted)?;
        Ok((batch.replies, replicated))
    }

    /// [`Scripts::run_pipeline`] across slots, on a single node only.
    pub(crate) async fn run_pipeline_single_node<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        pipe: &Pipeline,
    ) -> Result<T, BankError> {
        Ok(wxpush_redis::run_pipeline_single_node(conn, pipe, &self.all()).await?)
    }

    pub(crate) async fn run_pipeline<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        pipe: &Pipeline,
    ) -> Result<T, BankError> {
        Ok(wxpush_redis::run_pipeline(conn, pipe, &self.all()).await?)
    }
}
