//! The receipt outboxes (contract 8.3): `{ns}:ob:{<app>.<shard>}`, one zset per shard of users,
//! receipt JSON by the time it was settled (Redis ms). The campaign scripts write a receipt in
//! the step that settles its outcome ([`crate::Receipt`]); this module reads pages of an outbox,
//! removes what was published, finds outboxes holding receipts left behind, takes the fleet's
//! sweep lease, and writes the receipts of WeChat's delivery events (matched by msgid in the
//! user's shard, `{ns}:rm:{<app>.<shard>}:<day>`).
//!
//! This module must not publish anything (the roles' drainer does) nor decide outcomes.

use std::time::Duration;

use redis::{FromRedisValue, Value};
use wxpush_domain::{AppId, OpenId};

use crate::campaign::unix_day;
use crate::keys::{shard_of, shard_of_text};
use crate::{Bank, BankError, SHARDS};

/// How long `wxpush message status` can tell a single message's outcome: 9 days, past the
/// 8 days of its idempotency (contract 8.2).
pub const MESSAGE_STATUS_DAYS: i64 = 9;

/// What a receipt says of itself, read from its JSON: the single message it is for (`None`: a
/// campaign's recipient) and its outcome (`unknown` when unreadable). The one reading of a
/// receipt's kind, for its routing key and its place in the status index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHead {
    pub message_id: Option<String>,
    pub outcome: String,
}

impl ReceiptHead {
    pub fn of(receipt: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(receipt).unwrap_or_default();
        Self {
            message_id: v
                .get("messageId")
                .and_then(|m| m.as_str())
                .map(str::to_owned),
            outcome: v
                .get("outcome")
                .and_then(|o| o.as_str())
                .unwrap_or("unknown")
                .to_owned(),
        }
    }

    /// A receipt of WeChat's delivery event (not of the send's outcome).
    pub fn is_delivery(&self) -> bool {
        matches!(self.outcome.as_str(), "delivered" | "delivery_failed")
    }
}

/// A single message's receipt's place in the status index: its messageId, and the field (the
/// id for the send's outcome, `"<id> d"` for a delivery event's). `None` for a campaign's.
fn status_field(receipt: &str) -> Option<(String, String)> {
    let head = ReceiptHead::of(receipt);
    let id = head.message_id.clone()?;
    let field = if head.is_delivery() {
        format!("{id} d")
    } else {
        id.clone()
    };
    Some((id, field))
}

/// What [`Bank::message_status`] found of a single message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageStatus {
    /// The openId its messageId is bound to.
    pub open_id: Option<String>,
    /// The receipt of its send's outcome (JSON).
    pub outcome: Option<String>,
    /// The receipt of WeChat's delivery event (JSON).
    pub delivery: Option<String>,
}

impl Bank {
    /// The oldest `n` receipts of one outbox (JSON), oldest first.
    pub async fn receipt_outbox_page(
        &self,
        app: &AppId,
        shard: u16,
        n: usize,
    ) -> Result<Vec<String>, BankError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(self.keys.receipt_outbox(app, shard))
            .arg(0)
            .arg(n.saturating_sub(1));
        self.scripts.run(&mut self.connection(), &cmd).await
    }

    /// Removes published receipts from their outbox, and keeps the single messages' among them
    /// for `wxpush message status` ([`MESSAGE_STATUS_DAYS`] days, under their messageId; a
    /// delivery event's receipt beside the send's). In one round trip on a single node.
    pub async fn receipt_outbox_remove(
        &self,
        app: &AppId,
        shard: u16,
        receipts: &[String],
    ) -> Result<(), BankError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let mut cmds = Vec::new();
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.keys.receipt_outbox(app, shard)).arg(receipts);
        cmds.push(zrem);
        let day = unix_day();
        for r in receipts {
            let Some((id, field)) = status_field(r) else {
                continue;
            };
            let key = self.keys.message_status(app, shard_of_text(&id), day);
            let mut hset = redis::cmd("HSET");
            hset.arg(&key).arg(field).arg(r);
            let mut expire = redis::cmd("EXPIRE");
            expire.arg(&key).arg(MESSAGE_STATUS_DAYS * 86_400);
            cmds.push(hset);
            cmds.push(expire);
        }
        let (_, replicated) = self.scripts.run_batch(&self.conn, cmds, 0).await?;
        Ok(replicated?)
    }

    /// Binds single message `id` to `open_id` for [`MESSAGE_STATUS_DAYS`] days (at most one
    /// WeChat message per messageId and app): the openId it is bound to, `open_id` itself when
    /// it is this user's (bound now or before). One script in the id's slot.
    pub async fn bind_message(
        &self,
        app: &AppId,
        id: &str,
        open_id: &OpenId,
    ) -> Result<String, BankError> {
        let cmd = self.bind_message_cmd(app, id, open_id);
        self.scripts
            .run_applied(&mut self.conn.clone(), &cmd, self.settings.wait_replicas)
            .await?
            .replicated()
    }

    /// A claim (`cmd`, in the user's slot) sent with [`Bank::bind_message`] for single message
    /// `id` in the same round trip (one pipeline on a single node; the two slots at once on a
    /// cluster): the claim's reply, and the openId the id is bound to.
    pub(crate) async fn run_with_binding(
        &self,
        app: &AppId,
        open_id: &OpenId,
        id: &str,
        cmd: &redis::Cmd,
    ) -> Result<(crate::Applied<Value>, String), BankError> {
        let bind = self.bind_message_cmd(app, id, open_id);
        let (mut replies, replicated) = self
            .scripts
            .run_batch(
                &self.conn,
                vec![bind, cmd.clone()],
                self.settings.wait_replicas,
            )
            .await?;
        let (Some(claim), Some(bound), true) = (replies.pop(), replies.pop(), replies.is_empty())
        else {
            return Err(BankError::Protocol(
                "a bound claim's replies are missing".into(),
            ));
        };
        let bound = String::from_redis_value(bound)
            .map_err(|e| BankError::Protocol(format!("message_bind: {e}")))?;
        Ok((
            crate::Applied {
                value: claim,
                replicated,
            },
            bound,
        ))
    }

    fn bind_message_cmd(&self, app: &AppId, id: &str, open_id: &OpenId) -> redis::Cmd {
        let n = shard_of_text(id);
        let today = unix_day();
        let days: Vec<i64> = (today - (MESSAGE_STATUS_DAYS - 1)..=today + 1)
            .rev()
            .collect();
        let mut cmd = self.scripts.message_bind.evalsha();
        cmd.arg(days.len());
        for day in days {
            cmd.arg(self.keys.message_status(app, n, day));
        }
        cmd.arg(id)
            .arg(open_id.as_str())
            .arg(MESSAGE_STATUS_DAYS * 86_400);
        cmd
    }

    /// What is kept of single message `id` over the last [`MESSAGE_STATUS_DAYS`] days: the
    /// user it is bound to ([`Bank::bind_message`]; `None` when no sender took it yet), the
    /// receipt of its send's outcome and the one of WeChat's delivery event (JSON), each the
    /// newest kept.
    pub async fn message_status(&self, app: &AppId, id: &str) -> Result<MessageStatus, BankError> {
        let n = shard_of_text(id);
        let today = unix_day();
        let mut cmds = Vec::new();
        for day in (today - MESSAGE_STATUS_DAYS..=today + 1).rev() {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.keys.message_status(app, n, day))
                .arg(format!("{id} u"))
                .arg(id)
                .arg(format!("{id} d"));
            cmds.push(cmd);
        }
        let found: Vec<Vec<Option<String>>> = self.read_batch(cmds).await?;
        let newest = |i: usize| found.iter().find_map(|f| f.get(i).cloned().flatten());
        Ok(MessageStatus {
            open_id: newest(0),
            outcome: newest(1),
            delivery: newest(2),
        })
    }

    /// The shards of `app` whose outbox holds a receipt settled more than `older` ago (one
    /// `ZRANGE BYSCORE` per shard, in one round trip on a single node).
    pub async fn receipt_outboxes_stale(
        &self,
        app: &AppId,
        older: Duration,
    ) -> Result<Vec<u16>, BankError> {
        let before = self
            .now_ms()
            .await?
            .saturating_sub(i64::try_from(older.as_millis()).unwrap_or(i64::MAX));
        let cmds = (0..SHARDS)
            .map(|shard| {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(self.keys.receipt_outbox(app, shard))
                    .arg("-inf")
                    .arg(before)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1);
                cmd
            })
            .collect();
        let found: Vec<Vec<String>> = self.read_batch(cmds).await?;
        Ok(found
            .iter()
            .zip(0..SHARDS)
            .filter(|(f, _)| !f.is_empty())
            .map(|(_, shard)| shard)
            .collect())
    }

    /// Takes the fleet's receipt sweep for `lease` (`SET NX PX`): `false` when another process
    /// swept within it.
    pub async fn take_receipt_sweep(&self, lease: Duration) -> Result<bool, BankError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}:receipts:sweep", self.keys.namespace()))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let taken: Value = self.scripts.run(&mut self.connection(), &cmd).await?;
        Ok(!matches!(taken, Value::Nil))
    }

    /// Writes the receipt of WeChat's delivery event for `msgid`, a message to `open_id`
    /// (`delivered` when `errcode`, WeChat's `ErrorCode`, is 0, else `delivery_failed`; the
    /// receipt's `errcode` is it) into the user's shard's outbox, if the message had
    /// receipts and was sent within the last two days; the msgid is forgotten with it, so a push
    /// WeChat retries writes nothing more. Returns whether a receipt was written.
    pub async fn delivery_receipt(
        &self,
        app: &AppId,
        open_id: &OpenId,
        msgid: i64,
        errcode: i64,
    ) -> Result<bool, BankError> {
        let shard = shard_of(open_id);
        let today = unix_day();
        let mut cmd = self.scripts.receipt_delivery.evalsha();
        cmd.arg(4)
            .arg(self.keys.receipt_outbox(app, shard))
            .arg(self.keys.receipt_msgids(app, shard, today))
            .arg(self.keys.receipt_msgids(app, shard, today - 1))
            .arg(self.keys.receipt_msgids(app, shard, today + 1))
            .arg(msgid)
            .arg(if errcode == 0 {
                "delivered"
            } else {
                "delivery_failed"
            })
            .arg(errcode);
        let written: i64 = self
            .scripts
            .run_applied(&mut self.conn.clone(), &cmd, self.settings.wait_replicas)
            .await?
            .replicated()?;
        Ok(written == 1)
    }
}
