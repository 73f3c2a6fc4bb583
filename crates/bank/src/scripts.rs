//! The bank's Lua scripts (`lua/*.lua`) and how they are run.
//!
//! Scripts are sent by SHA (`EVALSHA`), also inside pipelines, where redis-rs does not load
//! them on its own; on `NOSCRIPT` (a restarted or flushed Redis) they are loaded and the
//! command or pipeline is sent once more, which is safe because every bank script is
//! idempotent or atomic. With replicas asked for (`WXPUSH_REDIS_WAIT_REPLICAS`), a write is
//! followed by `WAIT` in the same pipeline (no extra round trip), and a shortfall is reported
//! apart from the write's reply ([`Applied`]). This module must not decide what the scripts
//! mean.

use std::sync::OnceLock;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, Script, Value};

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

/// Appends `WAIT wanted timeout` to `pipe` (nothing when `wanted` is 0).
pub(crate) fn add_wait(pipe: &mut Pipeline, wanted: u32) {
    if wanted > 0 {
        pipe.cmd("WAIT").arg(wanted).arg(WAIT_TIMEOUT_MS);
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

pub(crate) struct BankScript {
    script: Script,
}

impl BankScript {
    fn new(source: &str) -> Self {
        Self {
            script: Script::new(source),
        }
    }

    /// `EVALSHA <sha>`; the caller adds the key count, keys and arguments.
    pub(crate) fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash());
        cmd
    }
}

pub(crate) struct Scripts {
    pub(crate) store: BankScript,
    pub(crate) claim: BankScript,
    pub(crate) release: BankScript,
    pub(crate) campaign_claim: BankScript,
    pub(crate) campaign_settle: BankScript,
    pub(crate) store_consents: BankScript,
    pub(crate) clear_consents: BankScript,
    pub(crate) campaign_claim_consent: BankScript,
    pub(crate) campaign_requeue: BankScript,
    pub(crate) record_open: BankScript,
    pub(crate) record_write: BankScript,
    pub(crate) record_stop: BankScript,
}

pub(crate) fn get() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        store: BankScript::new(include_str!("lua/store.lua")),
        claim: BankScript::new(include_str!("lua/claim.lua")),
        release: BankScript::new(include_str!("lua/release.lua")),
        campaign_claim: BankScript::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_claim.lua")
        )),
        campaign_settle: BankScript::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_settle.lua")
        )),
        store_consents: BankScript::new(include_str!("lua/store_consents.lua")),
        clear_consents: BankScript::new(include_str!("lua/clear_consents.lua")),
        campaign_claim_consent: BankScript::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_claim_consent.lua")
        )),
        campaign_requeue: BankScript::new(concat!(
            include_str!("lua/campaign_marks.lua"),
            include_str!("lua/campaign_requeue.lua")
        )),
        // The record's field names come from record.rs (`crate::record::lua_prelude`).
        record_open: BankScript::new(&crate::record::with_prelude(include_str!(
            "lua/record_open.lua"
        ))),
        record_write: BankScript::new(&crate::record::with_prelude(include_str!(
            "lua/record_write.lua"
        ))),
        record_stop: BankScript::new(&crate::record::with_prelude(include_str!(
            "lua/record_stop.lua"
        ))),
    })
}

fn is_noscript(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    )
}

impl Scripts {
    pub(crate) async fn load_all(&self, conn: &mut ConnectionManager) -> Result<(), BankError> {
        for s in [
            &self.store,
            &self.claim,
            &self.release,
            &self.campaign_claim,
            &self.campaign_settle,
            &self.store_consents,
            &self.clear_consents,
            &self.campaign_claim_consent,
            &self.campaign_requeue,
            &self.record_open,
            &self.record_write,
            &self.record_stop,
        ] {
            s.script.prepare_invoke().load_async(conn).await?;
        }
        Ok(())
    }

    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
        cmd: &Cmd,
    ) -> Result<T, BankError> {
        match cmd.query_async(conn).await {
            Err(e) if is_noscript(&e) => {
                self.load_all(conn).await?;
                Ok(cmd.query_async(conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// Runs one script command followed by `WAIT` for `wanted` replicas, in one pipeline.
    pub(crate) async fn run_applied<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
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

    pub(crate) async fn run_pipeline<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
        pipe: &Pipeline,
    ) -> Result<T, BankError> {
        match pipe.query_async(conn).await {
            Err(e) if is_noscript(&e) => {
                self.load_all(conn).await?;
                Ok(pipe.query_async(conn).await?)
            }
            other => Ok(other?),
        }
    }
}
