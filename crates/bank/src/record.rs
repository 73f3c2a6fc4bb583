//! A campaign's record, `{ns}:camp:{<app>.<n>}:<campaignId>`: its dispatch state, the lease of the
//! one dispatcher fanning it out, the stop flag, and what `campaign status` shows. Every field
//! name is here ([`field`]); the Lua scripts get them from [`with_prelude`], and dispatch, send,
//! status, the demo, the benchmarks and the tests read and write the record only through this
//! module.
//!
//! - **open** ([`CampaignRecord::open`], `lua/record_open.lua`): one script creates the record
//!   with every field, its state (`dispatching`) and the caller's lease in one step, so no crash
//!   leaves a record without a state. A record already `dispatched` answers
//!   [`Opened::Dispatched`]; one whose lease another dispatcher holds answers
//!   [`Opened::Held`]; otherwise the caller takes the lease (over) and resumes from the
//!   checkpoint.
//! - **the dispatch lease**: an owner token (`lease_owner`, a counter raised by every take, so
//!   never reused) and an expiry (`lease_until_ms`, Redis's clock). The owner renews it while
//!   it dispatches ([`CampaignRecord::renew`]); once it has expired (its owner died or stalled
//!   past it), the next [`CampaignRecord::open`] takes it over with a new token.
//! - **fenced writes** ([`CampaignRecord::save_page`], [`CampaignRecord::checkpoint`],
//!   [`CampaignRecord::finish`], [`CampaignRecord::release`], `lua/record_write.lua`): each names
//!   the owner token and is refused (`false`, nothing written) once another dispatcher took the
//!   lease over or the campaign is dispatched. A dispatcher whose write is refused stops. (An
//!   owner whose lease expired while nobody took it over still writes: nobody else can have.)
//! - **parts** (contract 8.1, [`Bank::record_for`]): a campaign sent in parts has one record
//!   per part (`<record key> part <k>`, [`part_record_key`]) holding that part's dispatch
//!   state, lease and checkpoint, so each part is dispatched (and resumed, and idempotent) on
//!   its own; the campaign's record beside it (same hash slot: every part script writes both)
//!   holds what status shows: `parts`, `parts_received`, `parts_dispatched`, the `targeted`
//!   of all parts, and `dispatched` once every part is. A campaign sent whole and one in parts
//!   under the same id do not mix ([`Opened::Conflict`]).
//! - **scheduled** (`sendAt`, contract 8.5): a campaign whose time is still ahead (Redis's
//!   clock) is opened in state [`SCHEDULED`] with its `send_at_ms`, no lease and no
//!   `started_at_ms`, kept until its time plus [`RECORD_TTL_SECS`]; [`CampaignRecord::open`]
//!   answers [`Opened::Scheduled`] until it is due, then opens it for dispatch as a new one.
//!   Cancelled while scheduled: [`Opened::Cancelled`] for good (nothing is fanned out); due
//!   while paused (since before it started): [`Opened::Paused`] until resumed.
//! - **stop** ([`CampaignRecord::stop`], [`CampaignRecord::stopped`]): the flag a sender sets
//!   when WeChat refuses a campaign's data (`47003`).
//! - **snapshot** ([`CampaignRecord::snapshot`], [`RecordSnapshot`]) and the send-job template
//!   kept at open ([`CampaignRecord::job_template`]).
//!
//! This module must not decide when a campaign is stopped, publish anything, or read the
//! campaign's outcome counters (those are the senders', `campaign.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Value};
use wxpush_domain::campaign::{Audience, Campaign, Part};
use wxpush_domain::{AppId, OpenId, SendJob};

use crate::{Bank, BankError, ReachableCursor};

/// The record's field names (the Lua scripts use the same, from [`with_prelude`]).
pub mod field {
    /// The campaign's app.
    pub const APP: &str = "app";
    /// `template` or `subscribe`.
    pub const KIND: &str = "kind";
    pub const TEMPLATE_ID: &str = "template_id";
    /// `all` or `list`.
    pub const AUDIENCE: &str = "audience";
    /// [`super::DISPATCHING`] or [`super::DISPATCHED`].
    pub const STATE: &str = "state";
    /// Jobs published and confirmed, each recipient counted once.
    pub const TARGETED: &str = "targeted";
    /// Invalid openIds of an explicit list.
    pub const REJECTED_RECIPIENTS: &str = "rejected_recipients";
    /// The checkpoint: an index into the explicit list, an index cursor, `""` at the start.
    pub const CURSOR: &str = "cursor";
    /// A page of the index written ahead of its jobs: the openIds joined by newlines.
    pub const PAGE: &str = "page";
    /// The checkpoint after the page written ahead.
    pub const PAGE_NEXT: &str = "page_next";
    /// Unix ms (Redis's clock).
    pub const STARTED_AT_MS: &str = "started_at_ms";
    pub const DISPATCHED_AT_MS: &str = "dispatched_at_ms";
    /// Set once, by the first sender whose send WeChat refused for the campaign's data.
    pub const STOPPED_AT_MS: &str = "stopped_at_ms";
    pub const STOPPED_REASON: &str = "stopped_reason";
    /// The campaign's send job with an empty openId, attempt 0 (JSON).
    pub const JOB: &str = "job";
    /// The token of the dispatcher holding (or that last held) the lease; raised by each take.
    pub const LEASE_OWNER: &str = "lease_owner";
    /// When the lease ends (Unix ms, Redis's clock; 0 once released or finished).
    pub const LEASE_UNTIL_MS: &str = "lease_until_ms";
    /// A campaign sent in parts: how many parts it has (the first part's word), on the
    /// campaign's record; each part's own record holds its dispatch state.
    pub const PARTS: &str = "parts";
    /// Parts whose message reached a dispatcher (each counted once: field `part <k>`).
    pub const PARTS_RECEIVED: &str = "parts_received";
    /// Parts whose every job is published.
    pub const PARTS_DISPATCHED: &str = "parts_dispatched";
    /// Set while an operator has the campaign paused (Unix ms, Redis's clock).
    pub const PAUSED_AT_MS: &str = "paused_at_ms";
    /// Set once an operator cancelled the campaign (Unix ms, Redis's clock).
    pub const CANCELLED_AT_MS: &str = "cancelled_at_ms";
    /// A scheduled campaign's `sendAt` (Unix ms), kept from its first message (contract 8.5).
    pub const SEND_AT_MS: &str = "send_at_ms";

    /// Every field, with its name in the scripts' `F` table.
    pub(crate) const ALL: [(&str, &str); 23] = [
        ("app", APP),
        ("kind", KIND),
        ("template_id", TEMPLATE_ID),
        ("audience", AUDIENCE),
        ("state", STATE),
        ("targeted", TARGETED),
        ("rejected_recipients", REJECTED_RECIPIENTS),
        ("cursor", CURSOR),
        ("page", PAGE),
        ("page_next", PAGE_NEXT),
        ("started_at_ms", STARTED_AT_MS),
        ("dispatched_at_ms", DISPATCHED_AT_MS),
        ("stopped_at_ms", STOPPED_AT_MS),
        ("stopped_reason", STOPPED_REASON),
        ("job", JOB),
        ("lease_owner", LEASE_OWNER),
        ("lease_until_ms", LEASE_UNTIL_MS),
        ("parts", PARTS),
        ("parts_received", PARTS_RECEIVED),
        ("parts_dispatched", PARTS_DISPATCHED),
        ("paused_at_ms", PAUSED_AT_MS),
        ("cancelled_at_ms", CANCELLED_AT_MS),
        ("send_at_ms", SEND_AT_MS),
    ];
}

/// An operator's action on a campaign (contract 8.5, `lua/record_control.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
}

impl Control {
    fn arg(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }
}

/// The flags senders obey ([`CampaignRecord::flags`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// WeChat refused the campaign's data (47003).
    pub stopped: bool,
    /// An operator paused it.
    pub paused: bool,
    /// An operator cancelled it.
    pub cancelled: bool,
}

/// The state of a campaign waiting for its `sendAt` (contract 8.5): its record is open, no
/// lease is taken, nothing is fanned out.
pub const SCHEDULED: &str = "scheduled";
/// The state of a campaign being fanned out.
pub const DISPATCHING: &str = "dispatching";
/// The state of a campaign whose every job is published.
pub const DISPATCHED: &str = "dispatched";

/// How long a dispatcher's lease on a campaign runs without a renewal: another dispatcher
/// takes the campaign over this long after its owner died or stalled.
pub const DISPATCH_LEASE: Duration = Duration::from_secs(10);

/// How long a campaign's record is kept after it is created, and after it is dispatched.
pub const RECORD_TTL_SECS: i64 = 30 * 24 * 3600;

/// The key of a campaign's record, `{ns}:camp:{<app>.<n>}:<campaignId>`: two apps may each
/// run a campaign of the same id. The hash tag comes before the id, so an id holding `{x}`
/// cannot choose the key's Redis Cluster slot; `<n>` spreads an app's records over
/// [`crate::SHARDS`] slots (FNV-1a of the id, as users are spread).
pub fn record_key(ns: impl std::fmt::Display, app: &AppId, campaign_id: &str) -> String {
    let n = crate::keys::shard_of_text(campaign_id);
    wxpush_redis::tagged(ns, "camp", format_args!("{app}.{n}"), Some(campaign_id))
}

/// The record of part `index` of a campaign sent in parts (contract 8.1): the campaign's
/// [`record_key`] and ` part <index>` (a campaign id holds no space, so no campaign's record
/// has this key), in the same hash slot, so one script writes a part's record and the
/// campaign's together.
pub fn part_record_key(
    ns: impl std::fmt::Display,
    app: &AppId,
    campaign_id: &str,
    index: u32,
) -> String {
    format!("{} part {index}", record_key(ns, app, campaign_id))
}

/// Where versions before Redis Cluster support kept the record: `{ns}:camp:<app>:<id>`, with
/// no hash tag of its own. On a single node, the first operation on a record moves one found
/// there to [`record_key`] (`RENAME`, in the operation's round trip); on a cluster there is
/// none to move (those versions refused to run on one).
pub fn legacy_record_key(ns: impl std::fmt::Display, app: &AppId, campaign_id: &str) -> String {
    format!("{ns}:camp:{app}:{campaign_id}")
}

/// Moves a record from its legacy key (KEYS[2]) to its key (KEYS[1]) unless it is there
/// already. Sent as `EVAL` (tiny, cached by Redis), first in the operation's pipeline.
const MIGRATE: &str = "if redis.call('EXISTS', KEYS[1]) == 0 and \
redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end return 0";

/// A record script's source with the prelude naming the fields (`F.<name>`) and states
/// (`S.dispatching`, `S.dispatched`) first.
pub(crate) fn with_prelude(body: &str) -> String {
    let fields: Vec<String> = field::ALL
        .iter()
        .map(|(lua, name)| format!("{lua} = '{name}'"))
        .collect();
    format!(
        "local F = {{{}}}\nlocal S = {{scheduled = '{SCHEDULED}', dispatching = '{DISPATCHING}', \
         dispatched = '{DISPATCHED}'}}\n{body}",
        fields.join(", ")
    )
}

/// A page of an index walk written ahead into the record (fields `page`, the openIds joined
/// by newlines, and `page_next`, the cursor after it) before its jobs are published; the
/// page's checkpoint removes it. While it is there, the page may have been published in part
/// or in full, so a resuming dispatcher publishes it again as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInFlight {
    pub users: Vec<OpenId>,
    /// The checkpoint after the page (`"<shard>:<scan>"` or `"end"`).
    pub next: String,
}

impl PageInFlight {
    /// A page read from the index, with the cursor the walk continues from.
    pub fn new(users: Vec<OpenId>, next: Option<ReachableCursor>) -> Self {
        Self {
            users,
            next: next.map_or_else(|| "end".to_owned(), |n| format!("{}:{}", n.shard, n.scan)),
        }
    }

    /// The page in the record's fields, if one is there. (The record is written only by
    /// dispatchers; an entry that is not an openId is dropped rather than published.)
    fn from_fields(page: Option<String>, next: Option<String>) -> Option<Self> {
        let (page, next) = (page?, next?);
        let users = page
            .split('\n')
            .filter(|u| !u.is_empty())
            .filter_map(|u| OpenId::new(u).ok())
            .collect();
        Some(Self { users, next })
    }
}

/// Where a campaign's dispatch resumes: its checkpoint, and the page of the index that was
/// being published when the last dispatcher stopped, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint: an index into the explicit list, or an index cursor (`""` at the start).
    pub cursor: String,
    pub in_flight: Option<PageInFlight>,
}

/// A dispatcher's hold on a campaign: its owner token, named by every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    /// How long each renewal makes it run.
    pub duration: Duration,
}

/// What [`CampaignRecord::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The caller holds the lease: it dispatches the campaign from `resume`. `created`: the
    /// record was created by this call.
    Owned {
        lease: Lease,
        created: bool,
        resume: Resume,
    },
    /// Every job of the campaign (of this part, for a part) is published: nothing to do.
    Dispatched,
    /// The campaign was sent whole and this message is a part of it, or the other way round:
    /// the message is refused (`part_conflict`).
    Conflict,
    /// Another dispatcher holds the lease, for `left` more unless it renews it.
    Held { left: Duration },
    /// The campaign's `sendAt` is `left` away (Redis's clock): the record shows it
    /// [`SCHEDULED`], no lease is taken; the caller holds its message back until then.
    /// `created`: this call opened the record.
    Scheduled { left: Duration, created: bool },
    /// An operator cancelled the campaign while it was scheduled: nothing is to be fanned out
    /// (the record keeps its state; status shows it cancelled).
    Cancelled,
    /// Its time has come but an operator paused it while it was scheduled: it is held,
    /// nothing fanned out, until resumed.
    Paused,
}

/// The record as read at one moment (`None` fields are absent or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSnapshot {
    /// Every field as stored (for readers that report fields they cannot parse).
    pub fields: BTreeMap<String, String>,
}

impl RecordSnapshot {
    /// A snapshot of fields read some other way (`campaign status` reads them beside the
    /// counters in one MULTI).
    pub fn from_fields(fields: BTreeMap<String, String>) -> Self {
        Self { fields }
    }

    /// A non-empty field as stored.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn number(&self, name: &str) -> Option<i64> {
        self.text(name).and_then(|v| v.trim().parse().ok())
    }

    /// `dispatching` or `dispatched`.
    pub fn state(&self) -> Option<&str> {
        self.text(field::STATE)
    }

    pub fn is_dispatched(&self) -> bool {
        self.state() == Some(DISPATCHED)
    }

    /// Jobs published (0 while none is; `None` when unreadable).
    pub fn targeted(&self) -> Option<u64> {
        match self.fields.get(field::TARGETED) {
            None => Some(0),
            Some(v) => v.trim().parse().ok(),
        }
    }

    pub fn started_at_ms(&self) -> Option<i64> {
        self.number(field::STARTED_AT_MS)
    }

    pub fn dispatched_at_ms(&self) -> Option<i64> {
        self.number(field::DISPATCHED_AT_MS)
    }

    /// The campaign's `sendAt` (Unix ms), if it was given one.
    pub fn send_at_ms(&self) -> Option<i64> {
        self.number(field::SEND_AT_MS)
    }

    /// Waiting for its `sendAt`: nothing fanned out yet.
    pub fn is_scheduled(&self) -> bool {
        self.state() == Some(SCHEDULED)
    }

    /// A campaign sent in parts: (parts received, parts dispatched, parts), each received
    /// part counted once; `None` for a campaign sent whole.
    pub fn parts(&self) -> Option<(u32, u32, u32)> {
        let n = |f| self.text(f).and_then(|v| v.trim().parse().ok());
        let parts = n(field::PARTS)?;
        Some((
            n(field::PARTS_RECEIVED).unwrap_or(0),
            n(field::PARTS_DISPATCHED).unwrap_or(0),
            parts,
        ))
    }

    /// Why the campaign was stopped (`"stopped"` if no reason was kept), if it was.
    pub fn stopped_reason(&self) -> Option<String> {
        self.fields.contains_key(field::STOPPED_AT_MS).then(|| {
            self.text(field::STOPPED_REASON)
                .unwrap_or("stopped")
                .to_owned()
        })
    }
}

/// One campaign's record (see the module documentation). Cheap to make; clones share the
/// bank's connection.
#[derive(Clone)]
pub struct CampaignRecord {
    bank: Bank,
    app: AppId,
    key: String,
    /// [`legacy_record_key`], on a single node only.
    legacy: Option<String>,
    /// A part's record: which part, and the campaign's record (whose counts, stop flag and
    /// job template the part shares).
    part: Option<(Part, String)>,
}

/// A campaign's two hashes as `wxpush campaign status` reads them, raw: the record's fields,
/// then each shard's outcome counters ([`crate::SHARDS`] of them, in shard order).
pub type CampaignHashes = (
    std::collections::HashMap<Vec<u8>, Vec<u8>>,
    Vec<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
);

impl Bank {
    /// Reads a campaign's record and outcome counters, read-only (a record at its
    /// [`legacy_record_key`] is read there, not moved). On a single node, in one atomic round
    /// trip (MULTI/EXEC): every figure belongs to the same moment. On a cluster, the record
    /// and each shard's counters are read apart (concurrently, one slot each): each shard's
    /// counters are consistent in themselves (one `HGETALL`, one script's writes at a time),
    /// but two shards may be read a few milliseconds apart, so a total can hold a send that
    /// a `targeted` read just before does not count yet (status clamps what goes below zero).
    pub async fn campaign_hashes(
        &self,
        app: &AppId,
        campaign_id: &str,
    ) -> Result<CampaignHashes, BankError> {
        type Hash = std::collections::HashMap<Vec<u8>, Vec<u8>>;
        let ns = self.keys.namespace();
        let key = record_key(ns, app, campaign_id);
        let shards = self.counter_reads(app, campaign_id);
        if self.conn.is_cluster() {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(&key);
            let record: Hash = cmd.query_async(&mut self.connection()).await?;
            let counters: Vec<Hash> = self.read_batch(shards).await?;
            return Ok((record, counters));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HGETALL").arg(&key);
        pipe.cmd("HGETALL")
            .arg(legacy_record_key(ns, app, campaign_id));
        for cmd in shards {
            pipe.add_command(cmd);
        }
        let mut hashes: Vec<Hash> = self
            .scripts
            .run_pipeline_single_node(&mut self.connection(), &pipe)
            .await?;
        if hashes.len() != 2 + usize::from(crate::SHARDS) {
            return Err(BankError::Protocol(format!(
                "{} hashes read for a campaign",
                hashes.len()
            )));
        }
        let counters = hashes.split_off(2);
        let legacy = hashes.pop().unwrap_or_default();
        let record = hashes.pop().filter(|h| !h.is_empty()).unwrap_or(legacy);
        Ok((record, counters))
    }

    /// `app`'s campaigns whose records opened since the index began (newest first, at most
    /// `limit`): (campaign id, when its record opened or, for one scheduled later, when it
    /// is due, Unix ms), from the campaign index
    /// (`{ns}:ci:{<app>.<n>}`, [`crate::Keys::campaign_index`]), read shard by shard in one
    /// batch (one pipeline on a single node). Read-only. Records opened by versions before
    /// the index are not listed; an entry whose record expired may be (its record reads empty).
    pub async fn campaign_list(
        &self,
        app: &AppId,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, BankError> {
        let reads: Vec<redis::Cmd> = (0..crate::SHARDS)
            .map(|n| {
                let mut cmd = redis::cmd("ZREVRANGE");
                cmd.arg(self.keys.campaign_index(app, n))
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("WITHSCORES");
                cmd
            })
            .collect();
        let shards: Vec<Vec<(String, f64)>> = self.read_batch(reads).await?;
        let mut all: Vec<(String, i64)> = shards
            .into_iter()
            .flatten()
            .map(|(id, at)| (id, at as i64))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        Ok(all)
    }

    /// The record of `app`'s campaign `campaign_id`.
    pub fn record(&self, app: &AppId, campaign_id: &str) -> CampaignRecord {
        CampaignRecord {
            bank: self.clone(),
            app: app.clone(),
            key: record_key(self.keys.namespace(), app, campaign_id),
            legacy: (!self.conn.is_cluster())
                .then(|| legacy_record_key(self.keys.namespace(), app, campaign_id)),
            part: None,
        }
    }

    /// The record a dispatcher of campaign `c` works on: the campaign's, or for a campaign
    /// sent in parts, its part's (with the campaign's record beside it).
    pub fn record_for(&self, app: &AppId, c: &Campaign) -> CampaignRecord {
        let Some(part) = c.part else {
            return self.record(app, &c.campaign_id);
        };
        let ns = self.keys.namespace();
        CampaignRecord {
            bank: self.clone(),
            app: app.clone(),
            key: part_record_key(ns, app, &c.campaign_id, part.index),
            legacy: None,
            part: Some((part, record_key(ns, app, &c.campaign_id))),
        }
    }
}

impl CampaignRecord {
    /// Runs `cmd` (a record script or a read of the record), on a single node after moving a
    /// record left at its legacy key, in the same round trip.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BankError> {
        let mut conn = self.bank.connection();
        let Some(legacy) = &self.legacy else {
            return self.bank.scripts.run(&mut conn, cmd).await;
        };
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(MIGRATE)
            .arg(2)
            .arg(&self.key)
            .arg(legacy)
            .ignore();
        pipe.add_command(cmd.clone());
        let mut replies: Vec<Value> = self
            .bank
            .scripts
            .run_pipeline_single_node(&mut conn, &pipe)
            .await?;
        let reply = replies
            .pop()
            .ok_or_else(|| BankError::Protocol("a record reply is missing".into()))?;
        T::from_redis_value(reply).map_err(|e| BankError::Protocol(format!("a record reply: {e}")))
    }

    /// The record's Redis key (a part's own, for a part).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The campaign's record: this one, or for a part, the campaign's (its counts, stop flag
    /// and job template).
    fn main_key(&self) -> &str {
        self.part.as_ref().map_or(&self.key, |(_, main)| main)
    }

    /// Opens campaign `c` (of this record's app) for dispatch under a lease of `lease`: creates
    /// the record if it is new, in one atomic step with every field (the first campaign
    /// message's content is kept: a republished campaign with other content changes nothing),
    /// or takes a free lease over. See [`Opened`].
    pub async fn open(&self, c: &Campaign, lease: Duration) -> Result<Opened, BankError> {
        let audience = match c.audience {
            Audience::All => "all",
            Audience::OpenIds(_) => "list",
            Audience::Recipients(_) => "recipients",
        };
        let mut job = c.job_template();
        job.app_id = Some(self.app.to_string());
        let mut cmd = self.bank.scripts.record_open.evalsha();
        let index_shard = crate::keys::shard_of_text(&c.campaign_id);
        cmd.arg(3)
            .arg(&self.key)
            .arg(self.main_key())
            .arg(self.bank.keys.campaign_index(&self.app, index_shard))
            .arg(millis(lease))
            .arg(RECORD_TTL_SECS)
            .arg(self.app.as_str())
            .arg(c.kind.name())
            .arg(&c.template_id)
            .arg(audience)
            .arg(c.rejected_recipients.len())
            .arg(job.to_json());
        match &self.part {
            Some((p, _)) => cmd.arg(p.index).arg(p.count),
            None => cmd.arg(0).arg(0),
        };
        cmd.arg(c.send_at_ms.unwrap_or(0).max(0));
        cmd.arg(&c.campaign_id);
        let reply: Vec<Value> = self.query(&cmd).await?;
        let text = |v: &Value| -> Option<String> {
            match v {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::SimpleString(s) => Some(s.clone()),
                Value::Int(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let owned = |token: &Value, created, resume| -> Result<Opened, BankError> {
            let token = text(token)
                .ok_or_else(|| BankError::Protocol(format!("record_open token {token:?}")))?;
            Ok(Opened::Owned {
                lease: Lease {
                    token,
                    duration: lease,
                },
                created,
                resume,
            })
        };
        match reply.as_slice() {
            [tag] if text(tag).as_deref() == Some("dispatched") => Ok(Opened::Dispatched),
            [tag] if text(tag).as_deref() == Some("conflict") => Ok(Opened::Conflict),
            [tag] if text(tag).as_deref() == Some("cancelled") => Ok(Opened::Cancelled),
            [tag] if text(tag).as_deref() == Some("paused") => Ok(Opened::Paused),
            [tag, left, created] if text(tag).as_deref() == Some("scheduled") => {
                let left = text(left).and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
                Ok(Opened::Scheduled {
                    left: Duration::from_millis(left),
                    created: text(created).as_deref() == Some("1"),
                })
            }
            [tag, left] if text(tag).as_deref() == Some("held") => {
                let left = text(left).and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
                Ok(Opened::Held {
                    left: Duration::from_millis(left),
                })
            }
            [tag, token] if text(tag).as_deref() == Some("new") => owned(
                token,
                true,
                Resume {
                    cursor: String::new(),
                    in_flight: None,
                },
            ),
            [tag, token, cursor, page, next] if text(tag).as_deref() == Some("resume") => owned(
                token,
                false,
                Resume {
                    cursor: text(cursor).unwrap_or_default(),
                    in_flight: PageInFlight::from_fields(text(page), text(next)),
                },
            ),
            other => Err(BankError::Protocol(format!(
                "record_open returned {other:?}"
            ))),
        }
    }

    async fn write(&self, lease: &Lease, op: &str, args: &[String]) -> Result<bool, BankError> {
        let mut cmd = self.bank.scripts.record_write.evalsha();
        cmd.arg(2)
            .arg(&self.key)
            .arg(self.main_key())
            .arg(&lease.token)
            .arg(millis(lease.duration))
            .arg(op);
        for a in args {
            cmd.arg(a);
        }
        let done: i64 = self.query(&cmd).await?;
        Ok(done == 1)
    }

    /// Makes the lease run its duration from now. `false`: it is lost (another dispatcher took
    /// it over, or the campaign is dispatched); the caller stops.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, BankError> {
        self.write(lease, "renew", &[]).await
    }

    /// Writes `page` ahead into the record before its jobs are published (and renews the
    /// lease). `false`: refused, the lease is lost; publish nothing.
    pub async fn save_page(&self, lease: &Lease, page: &PageInFlight) -> Result<bool, BankError> {
        let users: Vec<&str> = page.users.iter().map(OpenId::as_str).collect();
        self.write(lease, "page", &[users.join("\n"), page.next.clone()])
            .await
    }

    /// Counts a confirmed page of `published` jobs and moves the checkpoint to `cursor`,
    /// forgetting the page written ahead, in one step (and renews the lease): a page is
    /// counted once even if a crash makes the next dispatcher publish it again. `false`:
    /// refused, the lease is lost.
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        published: usize,
        cursor: &str,
    ) -> Result<bool, BankError> {
        self.write(
            lease,
            "checkpoint",
            &[published.to_string(), cursor.to_owned()],
        )
        .await
    }

    /// Marks the campaign dispatched (every job published) and ends the lease; the record is
    /// kept [`RECORD_TTL_SECS`] more. `false`: refused, the lease is lost.
    pub async fn finish(&self, lease: &Lease) -> Result<bool, BankError> {
        self.write(lease, "finish", &[RECORD_TTL_SECS.to_string()])
            .await
    }

    /// Ends the lease now, so that the next dispatcher takes the campaign over at once.
    /// `false`: it was lost already.
    pub async fn release(&self, lease: &Lease) -> Result<bool, BankError> {
        self.write(lease, "release", &[]).await
    }

    /// Marks the campaign stopped with `reason`, once: `true` when this call stopped it.
    pub async fn stop(&self, reason: &str) -> Result<bool, BankError> {
        let mut cmd = self.bank.scripts.record_stop.evalsha();
        cmd.arg(1)
            .arg(self.main_key())
            .arg(reason)
            .arg(RECORD_TTL_SECS);
        let first: i64 = self.query(&cmd).await?;
        Ok(first == 1)
    }

    /// An operator's action ([`Control`]): `None` when there is no such campaign, else whether
    /// it changed anything.
    pub async fn control(&self, action: Control) -> Result<Option<bool>, BankError> {
        let mut cmd = self.bank.scripts.record_control.evalsha();
        cmd.arg(1).arg(self.main_key()).arg(action.arg());
        let changed: i64 = self.query(&cmd).await?;
        Ok((changed >= 0).then_some(changed == 1))
    }

    /// What the senders obey: the stop flag, the pause, the cancel (one read).
    pub async fn flags(&self) -> Result<Flags, BankError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.main_key())
            .arg(field::STOPPED_AT_MS)
            .arg(field::PAUSED_AT_MS)
            .arg(field::CANCELLED_AT_MS);
        let got: Vec<Option<String>> = self.query(&cmd).await?;
        let set = |i: usize| got.get(i).is_some_and(Option::is_some);
        Ok(Flags {
            stopped: set(0),
            paused: set(1),
            cancelled: set(2),
        })
    }

    /// Whether the campaign was stopped.
    pub async fn stopped(&self) -> Result<bool, BankError> {
        let mut cmd = redis::cmd("HEXISTS");
        cmd.arg(self.main_key()).arg(field::STOPPED_AT_MS);
        let stopped: bool = self.query(&cmd).await?;
        Ok(stopped)
    }

    /// The campaign's record as it is now; `None` when there is none.
    pub async fn snapshot(&self) -> Result<Option<RecordSnapshot>, BankError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.main_key());
        let fields: BTreeMap<String, String> = self.query(&cmd).await?;
        Ok((!fields.is_empty()).then(|| RecordSnapshot::from_fields(fields)))
    }

    /// The campaign's send job as its dispatcher recorded it (empty openId, attempt 0), to
    /// build jobs for its recipients later ([`SendJob::for_recipient`]); `None` when the record
    /// or the field is missing (a campaign recorded by an older version). A field that does not
    /// parse is an error ([`BankError::Protocol`]).
    pub async fn job_template(&self) -> Result<Option<SendJob>, BankError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.main_key()).arg(field::JOB);
        let job: Option<String> = self.query(&cmd).await?;
        job.map(|j| parse_job_template(&j)).transpose()
    }
}

/// The record's `job` field as a send job.
fn parse_job_template(json: &str) -> Result<SendJob, BankError> {
    serde_json::from_str(json)
        .map_err(|e| BankError::Protocol(format!("the record's job template is unreadable: {e}")))
}

impl RecordSnapshot {
    /// The send-job template in this snapshot (see [`CampaignRecord::job_template`]).
    pub fn job_template(&self) -> Result<Option<SendJob>, BankError> {
        self.text(field::JOB).map(parse_job_template).transpose()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_names_every_field_once() {
        let p = with_prelude("return 1");
        for (lua, name) in field::ALL {
            assert!(p.contains(&format!("{lua} = '{name}'")), "{p}");
        }
        let names: std::collections::BTreeSet<&str> = field::ALL.iter().map(|f| f.1).collect();
        assert_eq!(names.len(), field::ALL.len(), "two fields share a name");
        assert!(p.ends_with("\nreturn 1"));
    }

    #[test]
    fn every_field_a_script_uses_is_in_the_prelude() {
        let known: std::collections::BTreeSet<&str> = field::ALL.iter().map(|f| f.0).collect();
        for src in [
            include_str!("lua/record_open.lua"),
            include_str!("lua/record_write.lua"),
            include_str!("lua/record_stop.lua"),
        ] {
            for (i, _) in src.match_indices("F.") {
                let name: String = src[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(known.contains(name.as_str()), "F.{name} is not a field");
            }
        }
    }

    #[test]
    fn a_snapshot_reads_what_it_can() {
        let s = RecordSnapshot::from_fields(
            [
                (field::STATE, DISPATCHED),
                (field::TARGETED, "12"),
                (field::STARTED_AT_MS, "1000"),
                (field::STOPPED_AT_MS, "2000"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        assert!(s.is_dispatched());
        assert_eq!(s.targeted(), Some(12));
        assert_eq!(s.started_at_ms(), Some(1000));
        assert_eq!(s.dispatched_at_ms(), None);
        assert_eq!(s.stopped_reason().as_deref(), Some("stopped"));
        assert_eq!(RecordSnapshot::default().targeted(), Some(0));
    }
}
