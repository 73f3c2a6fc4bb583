//! The credential bank: every user's WeChat credentials, kept in Redis.
//!
//! Three kinds of credential live in it (see `docs/bank.md`):
//! - **formIds** and **prepayId uses** (three per prepayId, sharing its expiry) in one zset per
//!   user, scored by expiry, spent soonest-to-expire first as one pool by template messages;
//! - **subscribe consents**, counted per user and template in a field of the user's shard's
//!   consent bucket, with per-shard totals and holder counts (`consent.rs`).
//!
//! The bank owns these operations and the guarantees behind them:
//! - **store** ([`Bank::store_batch`]): adds credentials, once each (a formId or prepayId use
//!   stored or already spent is never stored again), keeps at most `user_cap` usable ones per
//!   user (those expiring last), drops what is already expired, and keeps the reachable-user
//!   index and every key's expiry current; adds consents (they accumulate, up to
//!   `consents_per_template` per template and `templates_per_user` templates per user). Many
//!   users go to Redis in one pipelined round trip.
//! - **claim** ([`Bank::claim`]): removes and returns a user's usable credential that expires
//!   soonest, in one Lua script, so concurrent claimers in any number of processes never get
//!   the same credential. A credential expiring within `claim_margin_secs` counts as expired.
//! - **release** ([`Bank::release`]): gives back a claimed credential WeChat did not use.
//! - **campaign claim** ([`Bank::campaign_claim`], [`Bank::campaign_claim_consent`],
//!   [`Bank::campaign_settle`]): at most one message per user per campaign, whatever is
//!   redelivered or killed (see `campaign.rs`), spending a formId/prepayId use or a consent.
//! - **consents** ([`Bank::consents_left`], [`Bank::clear_consents`],
//!   [`Bank::release_consent`], [`Bank::consent_page`]).
//! - **the campaign record** ([`record`], [`Bank::record`]): a campaign's dispatch state, its
//!   dispatcher's lease (one dispatcher per campaign) and stop flag, every field named there.
//! - **reachable users** ([`Bank::reachable_page`]): streams the users who hold a usable
//!   credential, shard by shard, a page at a time, without `KEYS` or a keyspace `SCAN`.
//!
//! Time is Redis's own (`TIME` inside the scripts), so all processes share one clock: the
//! store script itself clamps each expiry to Redis's now + 7 days. With
//! [`BankSettings::wait_replicas`], every store, campaign claim and settle is followed by
//! `WAIT` in its pipeline, a shortfall being [`BankError::NotReplicated`]; [`Bank::durability`]
//! reads what Redis's own settings can lose (`durability.rs`).
//! Key layout: [`keys`]; member encoding: [`member`]. This crate must not know about
//! RabbitMQ, WeChat or message formats (the one exception: the campaign record keeps the
//! campaign's send job as `wxpush-domain` serialises it, [`record::CampaignRecord::job_template`]).

mod campaign;
mod consent;
mod durability;
pub mod events;
pub mod keys;
pub mod member;
mod reachable;
mod receipts;
pub use receipts::{MessageStatus, ReceiptHead, MESSAGE_STATUS_DAYS};
pub mod record;
mod requeue;
mod scripts;

use std::collections::BTreeMap;

use redis::{FromRedisValue, Value};
use wxpush_domain::{check_template_id, AppId, Credential, CredentialKind, Namespace, OpenId};
use wxpush_redis::Conn;

pub use campaign::{CampaignClaim, ClaimExtras, ClaimMode, Marked, Receipt, Settle};
pub use consent::CONSENT_TTL_SECS;
pub use durability::{Durability, Setting};
pub use events::{EventApplied, EVENT_MARK_TTL_SECS, PUSH_NONCE_TTL_SECS};
pub use keys::{Keys, SHARDS};
pub use reachable::{ReachableCursor, ReachablePage};
pub use requeue::{RequeuePage, REQUEUE_PAGE};
pub use scripts::{Applied, WAIT_TIMEOUT_MS};

/// The longest a credential is kept: 7 days after it reaches the bank, by Redis's clock
/// (WeChat's limit on a formId or prepayId; the contract's clamp).
pub const CREDENTIAL_LIFETIME_SECS: i64 = wxpush_domain::CREDENTIAL_LIFETIME_MS / 1000;

/// What can go wrong talking to the bank.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("cannot reach Redis: {0}")]
    Connect(#[source] redis::RedisError),
    #[error("Redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from a bank script: {0}")]
    Protocol(String),
    /// A credential the bank cannot store (a prepayId use number outside 1..=3, a consent
    /// for an invalid template id): a caller's mistake, refused before anything is sent.
    #[error("cannot store this credential: {0}")]
    InvalidCredential(String),
    /// The write was applied, but fewer replicas than `WXPUSH_REDIS_WAIT_REPLICAS` asks
    /// acknowledged it in time: what depends on it must not be acknowledged yet. Transient.
    #[error(transparent)]
    NotReplicated(#[from] NotReplicated),
}

/// Fewer replicas acknowledged a write (Redis `WAIT`) than the install asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "only {acked} of the {wanted} Redis replicas asked for (WXPUSH_REDIS_WAIT_REPLICAS) \
     acknowledged the write within {timeout_ms} ms"
)]
pub struct NotReplicated {
    pub wanted: u32,
    pub acked: u32,
    pub timeout_ms: u64,
}

impl BankError {
    /// True when retrying later may succeed (Redis down, timed out, loading, failing over).
    pub fn is_transient(&self) -> bool {
        match self {
            BankError::Connect(_) | BankError::NotReplicated(_) => true,
            BankError::Redis(e) => redis_is_transient(e),
            BankError::Protocol(_) | BankError::InvalidCredential(_) => false,
        }
    }
}

/// True when a Redis error may go away by itself: `wxpush_redis::is_transient`, under its
/// old name.
pub use wxpush_redis::is_transient as redis_is_transient;

/// Tunables of the bank (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct BankSettings {
    /// A credential expiring within this many seconds counts as expired.
    pub claim_margin_secs: u32,
    /// Most usable credentials kept per user.
    pub user_cap: u32,
    /// Most subscribe consents one user holds for one template: a store adds at most what
    /// brings the count to it.
    pub consents_per_template: u32,
    /// Most templates one user holds subscribe consents for: a consent for another template
    /// is refused.
    pub templates_per_user: u32,
    /// Replicas that must acknowledge (Redis `WAIT`, in the same pipeline) every store and
    /// every campaign claim and settle before it is reported done; 0: no `WAIT`
    /// (`WXPUSH_REDIS_WAIT_REPLICAS`). Short of it, the call fails with
    /// [`BankError::NotReplicated`] (the write itself was applied).
    pub wait_replicas: u32,
}

impl BankSettings {
    /// The bank's tunables as the install configures them.
    pub fn from_config(c: &wxpush_domain::Config) -> Self {
        Self {
            claim_margin_secs: c.claim_margin_secs,
            user_cap: c.user_cap,
            consents_per_template: c.consents_per_template,
            templates_per_user: c.templates_per_user,
            wait_replicas: c.redis_wait_replicas,
        }
    }
}

impl Default for BankSettings {
    fn default() -> Self {
        Self {
            claim_margin_secs: 60,
            user_cap: 100,
            consents_per_template: wxpush_domain::config::DEFAULT_CONSENTS_PER_TEMPLATE,
            templates_per_user: wxpush_domain::config::DEFAULT_TEMPLATES_PER_USER,
            wait_replicas: 0,
        }
    }
}

/// Credentials offered for one user, for [`Bank::store_batch`].
#[derive(Debug, Clone)]
pub struct StoreRequest<'a> {
    pub app: &'a AppId,
    pub open_id: &'a OpenId,
    /// FormIds and prepayId uses go to the user's credential zset; each credential of kind
    /// `Consent` adds one consent for its template (value) to the user's consent hash
    /// (`wxpush_domain::Consent::credentials` and `Upload::into_credentials` give them).
    pub credentials: &'a [Credential],
}

/// What a store did for one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Newly stored.
    pub added: u64,
    /// Already stored, or already spent: not stored again.
    pub known: u64,
    /// Expired (or within the safety margin) on arrival: not stored.
    pub expired: u64,
    /// Dropped because the user held more than the cap (the soonest-expiring go).
    pub capped: u64,
    /// Subscribe consents added (they accumulate, up to the caps).
    pub consents: u64,
    /// Subscribe consents refused by the caps: the user already held
    /// [`BankSettings::consents_per_template`] for the template, or consents for
    /// [`BankSettings::templates_per_user`] other templates.
    pub consents_capped: u64,
}

impl std::ops::AddAssign for StoreReport {
    fn add_assign(&mut self, o: Self) {
        self.added += o.added;
        self.known += o.known;
        self.expired += o.expired;
        self.capped += o.capped;
        self.consents += o.consents;
        self.consents_capped += o.consents_capped;
    }
}

/// A credential taken from the bank, now spent as far as the bank is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub credential: Credential,
    /// Credentials found expired (or inside the margin) and dropped on the way.
    pub dropped_expired: u64,
}

/// A handle on the bank. Cheap to clone; clones share one multiplexed connection.
#[derive(Clone)]
pub struct Bank {
    conn: Conn,
    keys: Keys,
    settings: BankSettings,
    scripts: &'static scripts::Scripts,
}

impl Bank {
    /// Connects to Redis (failing fast when it is unreachable) and loads the scripts.
    /// `redis_url` is one URL, or several separated by commas (a Redis Cluster's seed nodes;
    /// one URL of a cluster is enough, see `wxpush_redis::connect`). A `rediss://` URL trusts
    /// the system's certificate store; see [`Bank::connect_tls`].
    pub async fn connect(
        redis_url: &str,
        ns: Namespace,
        settings: BankSettings,
    ) -> Result<Self, BankError> {
        Self::connect_tls(redis_url, ns, settings, None).await
    }

    /// Like [`Bank::connect`], and a `rediss://` URL trusts the CA certificates in `ca_pem`
    /// (PEM) **instead of** the system's store: the redis crate replaces its roots with the
    /// ones given. `ca_pem` is unused for other schemes.
    pub async fn connect_tls(
        redis_url: &str,
        ns: Namespace,
        settings: BankSettings,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, BankError> {
        let urls = wxpush_domain::split_urls(redis_url);
        let conn = wxpush_redis::connect(&urls, ca_pem)
            .await
            .map_err(BankError::Connect)?;
        Self::with_connection(conn, ns, settings).await
    }

    /// A bank on a connection made already (scripts loaded here).
    pub async fn with_connection(
        conn: Conn,
        ns: Namespace,
        settings: BankSettings,
    ) -> Result<Self, BankError> {
        let bank = Self {
            conn,
            keys: Keys::new(ns),
            settings,
            scripts: scripts::get(),
        };
        match bank.scripts.load_all(&mut bank.conn.clone()).await {
            Ok(()) => {}
            // On a cluster the load goes to every node, replicas included, and fails while
            // one does not answer; a script missing on a primary is loaded there on first use.
            Err(e) if bank.conn.is_cluster() => {
                tracing::debug!(error = %e, "scripts not loaded on every cluster node yet");
            }
            Err(e) => return Err(e),
        }
        Ok(bank)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn settings(&self) -> BankSettings {
        self.settings
    }

    /// Which connection the bank's commands go out on ([`wxpush_redis::Conn::generation`]):
    /// a write whose `WAIT` fell short on another generation must be written again.
    pub fn connection_generation(&self) -> u64 {
        self.conn.generation()
    }

    /// The connection, for callers that need plain commands beside the bank's.
    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// Checks Redis answers (for readiness) and, with [`BankSettings::wait_replicas`], that
    /// as many replicas acknowledge this connection's writes so far (`WAIT`, in the same
    /// pipeline): a role cannot acknowledge anything while they do not.
    pub async fn ping(&self) -> Result<(), BankError> {
        if self.conn.is_cluster() {
            // Single commands: the cluster client sends PING and WAIT to every primary (the
            // fewest acknowledgements count), where a keyless pipeline would reach one node.
            let _: Value = redis::cmd("PING")
                .query_async(&mut self.conn.clone())
                .await?;
            return self.wait_replicas().await;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        scripts::add_wait(&mut pipe, self.settings.wait_replicas);
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
        scripts::check_wait(&mut replies, self.settings.wait_replicas)??;
        Ok(())
    }

    /// Waits (`WAIT`, up to [`WAIT_TIMEOUT_MS`]) for the replicas asked for to acknowledge
    /// every write made on the bank's connection so far (on a cluster: on every primary, the
    /// fewest acknowledgements counting); `Ok` at once when none are asked for.
    pub async fn wait_replicas(&self) -> Result<(), BankError> {
        // One command: on a cluster, the client sends it to every primary.
        let Some(wait) = scripts::wait_cmd(self.settings.wait_replicas) else {
            return Ok(());
        };
        let reply: Value = wait.query_async(&mut self.conn.clone()).await?;
        scripts::check_wait(&mut vec![reply], self.settings.wait_replicas)??;
        Ok(())
    }

    /// Stores credentials for many users in one pipelined round trip: per user, one script
    /// for the formIds and prepayId uses (`store.lua`) and one for the consents
    /// (`store_consents.lua`), each only when there is something for it.
    ///
    /// Storing formIds and prepayId uses is idempotent: storing the same batch again changes
    /// nothing, so a batch may be retried whole. Consents accumulate, so a batch stored twice
    /// (retried after a timeout, redelivered after a crash) adds its consents twice: the
    /// extra consent is one send WeChat refuses with 43101, which clears the user's count for
    /// that template (see `docs/bank.md`). They accumulate only up to the caps
    /// ([`BankSettings::consents_per_template`], [`BankSettings::templates_per_user`]),
    /// applied in the same script: what is over them is refused and reported
    /// ([`StoreReport::consents_capped`]), so no replay grows a user's consents past them.
    ///
    /// A credential's expiry is clamped in the script to Redis's now + 7 days, and one that
    /// is expired by Redis's clock (or within the margin) is not stored: no other clock counts.
    /// With [`BankSettings::wait_replicas`], a shortfall of replicas is
    /// [`BankError::NotReplicated`] (the credentials are stored all the same).
    pub async fn store_batch(
        &self,
        requests: &[StoreRequest<'_>],
    ) -> Result<Vec<StoreReport>, BankError> {
        self.store_batch_applied(requests).await?.replicated()
    }

    /// [`Bank::store_batch`], telling a shortfall of replicas apart from the reports: the
    /// write was applied, so a caller may wait for the replicas ([`Bank::wait_replicas`])
    /// rather than write again (which would add a batch's consents twice).
    pub async fn store_batch_applied(
        &self,
        requests: &[StoreRequest<'_>],
    ) -> Result<Applied<Vec<StoreReport>>, BankError> {
        let mut cmds = Vec::new();
        // For each request: whether its zset store and its consent store are in the pipeline.
        let mut plan = Vec::with_capacity(requests.len());
        for r in requests {
            let mut in_zset = false;
            let mut consents: BTreeMap<&str, u64> = BTreeMap::new();
            let mut cmd = self.scripts.store.evalsha();
            cmd.arg(2)
                .arg(self.keys.credentials(r.app, r.open_id))
                .arg(self.keys.index_of(r.app, r.open_id))
                .arg(self.settings.claim_margin_secs)
                .arg(self.settings.user_cap)
                .arg(r.open_id.as_str())
                .arg(CREDENTIAL_LIFETIME_SECS);
            for c in r.credentials {
                match c.kind {
                    CredentialKind::Consent => {
                        check_template_id(&c.value).map_err(|e| {
                            BankError::InvalidCredential(format!("a consent's {e}"))
                        })?;
                        *consents.entry(c.value.as_str()).or_default() += 1;
                    }
                    CredentialKind::PrepayId { use_no } if !member::valid_use(use_no) => {
                        return Err(BankError::InvalidCredential(format!(
                            "prepayId use {use_no} (uses are 1 to {})",
                            wxpush_domain::PREPAY_USES
                        )));
                    }
                    CredentialKind::FormId | CredentialKind::PrepayId { .. } => {
                        cmd.arg(c.expires_at).arg(member::encode(c));
                        in_zset = true;
                    }
                }
            }
            if in_zset {
                cmds.push(cmd);
            }
            if !consents.is_empty() {
                cmds.push(self.store_consents_cmd(r.app, r.open_id, &consents));
            }
            plan.push((in_zset, consents));
        }
        if cmds.is_empty() {
            return Ok(Applied {
                value: vec![StoreReport::default(); requests.len()],
                replicated: Ok(()),
            });
        }
        let (replies, mut replicated) = self
            .scripts
            .run_batch(&self.conn, cmds, self.settings.wait_replicas)
            .await?;
        let mut replies = replies.into_iter();
        let mut next = || {
            replies
                .next()
                .ok_or_else(|| BankError::Protocol("a store reply is missing".into()))
        };
        let mut reports = Vec::with_capacity(requests.len());
        // Users whose consents are still in the layout before buckets: stored once moved.
        let mut to_move = Vec::new();
        for (i, (in_zset, consents)) in plan.iter().enumerate() {
            let in_zset = *in_zset;
            let mut report = StoreReport::default();
            if in_zset {
                match Vec::<i64>::from_redis_value(next()?).as_deref() {
                    Ok([a, k, e, c]) => {
                        report.added = non_negative(*a);
                        report.known = non_negative(*k);
                        report.expired = non_negative(*e);
                        report.capped = non_negative(*c);
                    }
                    other => return Err(BankError::Protocol(format!("store returned {other:?}"))),
                }
            }
            if !consents.is_empty() {
                match consent::parse_store_consents(next()?)? {
                    Some(stored) => (report.consents, report.consents_capped) = stored,
                    None => to_move.push(i),
                }
            }
            reports.push(report);
        }
        for i in to_move {
            let (r, consents) = (&requests[i], &plan[i].1);
            let again = self
                .store_consents_again(r.app, r.open_id, consents)
                .await?;
            (reports[i].consents, reports[i].consents_capped) = again.value;
            if replicated.is_ok() {
                replicated = again.replicated;
            }
        }
        Ok(Applied {
            value: reports,
            replicated,
        })
    }

    /// Stores one user's credentials.
    pub async fn store(
        &self,
        app: &AppId,
        open_id: &OpenId,
        credentials: &[Credential],
    ) -> Result<StoreReport, BankError> {
        let mut reports = self
            .store_batch(&[StoreRequest {
                app,
                open_id,
                credentials,
            }])
            .await?;
        reports
            .pop()
            .ok_or_else(|| BankError::Protocol("no reply to a store".into()))
    }

    /// Takes the user's usable credential that expires soonest, or `None` when the user has
    /// none. One atomic script: no two claimers ever receive the same credential.
    pub async fn claim(&self, app: &AppId, open_id: &OpenId) -> Result<Option<Claimed>, BankError> {
        let mut cmd = self.scripts.claim.evalsha();
        cmd.arg(2)
            .arg(self.keys.credentials(app, open_id))
            .arg(self.keys.index_of(app, open_id))
            .arg(self.settings.claim_margin_secs)
            .arg(open_id.as_str());
        let reply: Vec<Value> = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        parse_claim(&reply)
    }

    /// Gives back a credential claimed from this user that WeChat did not use (it refused the
    /// message for another reason before spending the credential). Returns whether it was
    /// given back: only a spent credential of this user, still usable, can be. A consent is
    /// never given back here (`false`): it has no tombstone to guard a second give-back; see
    /// [`Bank::release_consent`] and [`Settle::Release`].
    pub async fn release(
        &self,
        app: &AppId,
        open_id: &OpenId,
        credential: &Credential,
    ) -> Result<bool, BankError> {
        if credential.is_consent() {
            return Ok(false);
        }
        let mut cmd = self.scripts.release.evalsha();
        cmd.arg(2)
            .arg(self.keys.credentials(app, open_id))
            .arg(self.keys.index_of(app, open_id))
            .arg(self.settings.claim_margin_secs)
            .arg(open_id.as_str())
            .arg(credential.expires_at)
            .arg(member::encode(credential));
        let released: i64 = self.scripts.run(&mut self.conn.clone(), &cmd).await?;
        Ok(released == 1)
    }

    /// Reads with one command per shard (or user), in one round trip on a single node and one
    /// per slot on a cluster ([`wxpush_redis::run_batch`]), each reply converted to `T`.
    pub async fn read_batch<T: FromRedisValue>(
        &self,
        cmds: Vec<redis::Cmd>,
    ) -> Result<Vec<T>, BankError> {
        let batch = wxpush_redis::run_batch(&self.conn, cmds, None, &[]).await?;
        batch
            .replies
            .into_iter()
            .map(|v| {
                T::from_redis_value(v).map_err(|e| BankError::Protocol(format!("a reply: {e}")))
            })
            .collect()
    }

    /// Redis's clock, in Unix milliseconds (`TIME`): the one clock every script uses.
    pub async fn now_ms(&self) -> Result<i64, BankError> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// How many usable credentials (formIds and prepayId uses; consents are counted by
    /// [`Bank::consents_left`]) the user holds now.
    pub async fn usable_count(&self, app: &AppId, open_id: &OpenId) -> Result<u64, BankError> {
        let mut conn = self.conn.clone();
        let now = redis_time(&mut conn).await?;
        let limit = now + i64::from(self.settings.claim_margin_secs);
        let n: u64 = redis::cmd("ZCOUNT")
            .arg(self.keys.credentials(app, open_id))
            .arg(format!("({limit}"))
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn parse_claim(reply: &[Value]) -> Result<Option<Claimed>, BankError> {
    let int = |v: &Value| -> Result<i64, BankError> {
        match v {
            Value::Int(n) => Ok(*n),
            Value::BulkString(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|f| f as i64)
                .ok_or_else(|| BankError::Protocol("a score that is not a number".into())),
            other => Err(BankError::Protocol(format!("claim returned {other:?}"))),
        }
    };
    match reply {
        [dropped] => {
            int(dropped)?;
            Ok(None)
        }
        [dropped, Value::BulkString(member), score] => {
            let expires_at = int(score)?;
            let credential = member::decode(member, expires_at).ok_or_else(|| {
                BankError::Protocol("a stored credential this version cannot read".into())
            })?;
            Ok(Some(Claimed {
                credential,
                dropped_expired: non_negative(int(dropped)?),
            }))
        }
        other => Err(BankError::Protocol(format!("claim returned {other:?}"))),
    }
}

/// Redis's clock, in Unix seconds.
pub(crate) async fn redis_time(conn: &mut Conn) -> Result<i64, BankError> {
    let (secs, _micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs)
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[tokio::test]
    async fn a_broken_ca_certificate_is_refused_before_connecting() {
        let pem = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let ns = Namespace::new("t-tls-unit").expect("namespace");
        // Port 1: nothing listens there, so only the certificate check can fail first.
        let e = Bank::connect_tls("rediss://localhost:1/0", ns, Default::default(), Some(pem))
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, BankError::Connect(_)), "{e}");
        assert!(e.to_string().contains("root certificate PEM"), "{e}");
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn the_settings_are_the_configured_ones() {
        let vars = [
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_CLAIM_MARGIN_SECS", "7"),
            ("WXPUSH_USER_CAP", "8"),
            ("WXPUSH_CONSENTS_PER_TEMPLATE", "9"),
            ("WXPUSH_TEMPLATES_PER_USER", "10"),
        ];
        let config = wxpush_domain::RawConfig::from_map(
            &vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .validate()
        .expect("valid");
        let s = BankSettings::from_config(&config);
        assert_eq!(
            (
                s.claim_margin_secs,
                s.user_cap,
                s.consents_per_template,
                s.templates_per_user
            ),
            (7, 8, 9, 10)
        );
        let d = BankSettings::default();
        assert_eq!((d.consents_per_template, d.templates_per_user), (50, 100));
    }
}
