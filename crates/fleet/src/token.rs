//! The access token one app's senders share: [`TokenStore`].
//!
//! Lookup order: the in-process cache (no Redis round trip while the token is fresh), then the
//! token in Redis, then a refresh. A token is *due* once less than
//! `min(refresh_ahead, lifetime / 4)` of its life remains (WxJava: 200 s of 7200 s) and *usable*
//! until `min(refresh_ahead / 10, lifetime / 20)` before it expires; a due but usable token is
//! still handed out while one process refreshes it, so nobody waits for a refresh except when
//! there is no usable token at all.
//!
//! Refreshing is fleet-wide single-flight: reading the token and taking the lease lock
//! (`SET NX PX`, random owner) happen in one script, so the lock is taken only if no fresh
//! token exists at that instant (the double-check); the lock is released by compare-and-delete.
//! Processes that do not hold the lock poll Redis every `poll_interval` (at most about one
//! lease) instead of fetching their own token. Within a process, one task at a time talks to
//! Redis; the others wait for its answer.
//!
//! Invalidation (after 40001/40014/42001) deletes the shared token only if it is still the one
//! that failed and at least `min_refresh_interval` old, so a burst of failures causes one
//! refresh, and neither a fleet invalidating each other's tokens (WxJava #369/#2636) nor an
//! endless refresh loop (#1381) can burn the daily token quota: refreshes caused by
//! invalidations are at least `min_refresh_interval` apart.
//!
//! A failed refresh is remembered in Redis and in-process (a refusal such as a wrong secret for
//! `remember_refusal`, a transient failure for `remember_unavailable`), so the fleet asks the
//! token endpoint at most once per that time; failures in a row are remembered twice as long
//! each time, up to `remember_max` (a streak in the same key, ended by the next token stored),
//! so an endpoint that refuses or is down for hours is asked a few times an hour, not every
//! few seconds. The error says how long the failure stays remembered
//! ([`TokenStoreError::retry_in`]): the senders pause the app's sends that long. Transient
//! failures are retried a few times with exponential backoff and jitter while holding the
//! lock. Every fetch has a timeout (the client's token timeout, and the whole refresh at most
//! 3/4 of the lock's lease); a process waiting for another's refresh gives up after about one
//! lease, and its other tasks get that answer at once instead of waiting again in turn.
//!
//! Where a refresh fetches from is the app's [`TokenSource`] (contract §8.6): WeChat's
//! `stable_token` (the default), its classic `/cgi-bin/token`, or the install's own token
//! service. For `stable`, a token is the same for every caller, so fetching it again gives back
//! a token WeChat has just rejected if WeChat still calls it current. Only then is
//! `force_refresh: true` spent: an invalidation that drops the shared token (so it was still the
//! current one) also marks it rejected in Redis (`token-rejected`, for its remaining life); a
//! refresh whose plain fetch answers that very token asks again with `force_refresh: true` if
//! the app's fleet-wide budget allows one: at most [`FORCE_REFRESH_PER_DAY`] in any 24 hours and
//! [`FORCE_REFRESH_SPACING`] apart, counted atomically in one script (`token-force`). Otherwise
//! the rejected token is kept, and sends retry later as after any second refusal.
//!
//! This module must not decide what a send's answer means (the caller says a token failed),
//! and must never put the app secret or a token into an error, a `Debug` print or a log line.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use wxpush_domain::{AppId, Namespace, Secret, TokenSource};
use wxpush_redis::Conn;
use wxpush_wechat::{AccessToken, Client, TokenError, MAX_TOKEN_LIFETIME_SECS};

use crate::keys::Keys;
use crate::scripts::{self, Scripts};
use crate::FleetError;

/// WeChat's limit on `stable_token` with `force_refresh: true`: 20 a day. The fleet counts it
/// in any 24 hours (a rolling window), not per calendar day: WeChat does not document when its
/// day starts, and no 24 hours holding more than 20 means no calendar day does either.
pub const FORCE_REFRESH_PER_DAY: u32 = 20;
/// WeChat's least interval between two `force_refresh: true` calls (a call sooner does not
/// refresh).
pub const FORCE_REFRESH_SPACING: Duration = Duration::from_secs(30);
const FORCE_REFRESH_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Tunables of a [`TokenStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The longest refresh-ahead margin: a token is due for refresh once less than
    /// `min(refresh_ahead, lifetime / 4)` remains. Default 200 s (WxJava's).
    pub refresh_ahead: Duration,
    /// Least age of a token an invalidation may drop; younger ones are kept (the caller
    /// should treat its send as transient and retry later). Default 30 s.
    pub min_refresh_interval: Duration,
    /// Lease of the refresh lock; a fetch (with its retries) is cut off at 3/4 of it.
    /// Default 30 s.
    pub lock_lease: Duration,
    /// How often a process waiting for another's refresh looks at Redis. Default 50 ms.
    pub poll_interval: Duration,
    /// How long a refused fetch (bad appid or secret, IP not whitelisted, frozen secret, any
    /// other non-transient answer) is remembered before the endpoint is asked again.
    /// Default 10 s.
    pub remember_refusal: Duration,
    /// How long a fetch that failed transiently after its retries is remembered. Default 1 s.
    pub remember_unavailable: Duration,
    /// Failures in a row are remembered twice as long each time, up to this. Default 5 min.
    pub remember_max: Duration,
    /// Retries of a transiently failing fetch (after the first try). Default 3.
    pub fetch_retries: usize,
    /// First retry delay (doubling, with jitter). Default 200 ms.
    pub retry_min_delay: Duration,
    /// Longest retry delay. Default 2 s.
    pub retry_max_delay: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            refresh_ahead: Duration::from_secs(200),
            min_refresh_interval: Duration::from_secs(30),
            lock_lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            remember_refusal: Duration::from_secs(10),
            remember_unavailable: Duration::from_secs(1),
            remember_max: Duration::from_secs(300),
            fetch_retries: 3,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
        }
    }
}

impl TokenSettings {
    /// Time before expiry at which a token of this lifetime is due for refresh.
    pub fn refresh_margin(&self, lifetime: Duration) -> Duration {
        self.refresh_ahead.min(lifetime / 4)
    }

    /// Time before expiry after which a token of this lifetime is no longer handed out.
    pub fn usable_margin(&self, lifetime: Duration) -> Duration {
        (self.refresh_ahead / 10).min(lifetime / 20)
    }
}

/// An access token as the fleet shares it. `Debug` never shows the token.
#[derive(Clone)]
pub struct Token {
    value: Arc<str>,
    fetched_at_ms: u64,
    expires_at_ms: u64,
    expires_at: Instant,
}

impl Token {
    /// The token itself, for the send request. Never print or log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// When it was fetched: Unix ms on Redis's clock (erring early).
    pub fn fetched_at_ms(&self) -> u64 {
        self.fetched_at_ms
    }

    /// When WeChat will stop accepting it: Unix ms on Redis's clock (erring early).
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// When it expires, on this process's monotonic clock (erring early).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Time left before it expires (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"***")
            .field("fetched_at_ms", &self.fetched_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Why [`TokenStore::get`] gave no token. None of these carries the secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// WeChat refused to issue a token (bad appid or secret, IP not whitelisted, frozen
    /// secret, ...): an operator must act. Not asked again for `retry_in`.
    #[error("WeChat refused an access token for app {app}: {reason}")]
    Refused {
        app: AppId,
        #[source]
        reason: TokenError,
        /// How long the fleet does not ask again.
        retry_in: Duration,
    },
    /// The token endpoint failed transiently, also after retries: try again later.
    #[error("no access token for app {app} for now: {reason}")]
    Unavailable {
        app: AppId,
        #[source]
        reason: TokenError,
        /// How long the fleet does not ask again.
        retry_in: Duration,
    },
    /// Another process held the refresh lock this long without storing a token.
    #[error("no access token for app {app}: waited {waited:?} for another process's refresh")]
    WaitTimedOut { app: AppId, waited: Duration },
    /// Redis failed.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

impl From<redis::RedisError> for TokenStoreError {
    fn from(e: redis::RedisError) -> Self {
        TokenStoreError::Fleet(FleetError::Redis(e))
    }
}

impl TokenStoreError {
    /// How long the fleet will not ask the token endpoint again after this failure (a refusal
    /// or an endpoint failing, remembered fleet-wide); `None` for the other errors.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            TokenStoreError::Refused { retry_in, .. }
            | TokenStoreError::Unavailable { retry_in, .. } => Some(*retry_in),
            TokenStoreError::WaitTimedOut { .. } | TokenStoreError::Fleet(_) => None,
        }
    }

    /// True when trying again later may succeed (everything but a refusal, or a Redis
    /// failure that is not a connection problem).
    pub fn is_transient(&self) -> bool {
        match self {
            TokenStoreError::Refused { .. } => false,
            TokenStoreError::Unavailable { .. } | TokenStoreError::WaitTimedOut { .. } => true,
            TokenStoreError::Fleet(e) => e.is_transient(),
        }
    }
}

/// What [`TokenStore::invalidate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// The failed token was the shared one and is gone: the next `get` refreshes.
    Invalidated,
    /// The shared token is already another one (or none): nothing done; `get` again.
    AlreadyReplaced,
    /// The failed token is younger than `min_refresh_interval`: kept, to stop refresh loops.
    /// Treat the send as transient and retry it later.
    TooYoung,
}

/// A remembered failed refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Refused(TokenError),
    Unavailable(TokenError),
}

impl Failure {
    fn of(e: TokenError) -> Self {
        if e.is_transient() {
            Failure::Unavailable(e)
        } else {
            Failure::Refused(e)
        }
    }

    /// The error of this failure, remembered `retry_in` more.
    fn to_error(&self, app: &AppId, retry_in: Duration) -> TokenStoreError {
        match self {
            Failure::Refused(e) => TokenStoreError::Refused {
                app: app.clone(),
                reason: e.clone(),
                retry_in,
            },
            Failure::Unavailable(e) => TokenStoreError::Unavailable {
                app: app.clone(),
                reason: e.clone(),
                retry_in,
            },
        }
    }

    /// `R|code|errmsg` or `U|code|reason` (code empty when none), for the shared key. The texts
    /// are the wechat client's, already free of the secret.
    fn encode(&self) -> String {
        let (kind, code, text) = match self {
            Failure::Refused(e) | Failure::Unavailable(e) => {
                let kind = if matches!(self, Failure::Refused(_)) {
                    'R'
                } else {
                    'U'
                };
                let (code, text) = match e {
                    TokenError::BadAppId => (Some(40013), ""),
                    TokenError::BadSecret { code } => (Some(*code), ""),
                    TokenError::IpNotWhitelisted { errmsg } => (Some(40164), errmsg.as_str()),
                    TokenError::SecretFrozen => (Some(40243), ""),
                    TokenError::Transient { code, reason } => (*code, reason.as_str()),
                    TokenError::Other { code, errmsg } => (Some(*code), errmsg.as_str()),
                };
                (kind, code, text)
            }
        };
        let code = code.map(|c| c.to_string()).unwrap_or_default();
        format!("{kind}|{code}|{text}")
    }

    fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '|');
        let kind = parts.next()?;
        let code = parts.next()?;
        let text = parts.next()?.to_owned();
        let code: Option<i64> = if code.is_empty() {
            None
        } else {
            Some(code.parse().ok()?)
        };
        match kind {
            "U" => Some(Failure::Unavailable(TokenError::Transient {
                code,
                reason: text,
            })),
            "R" => Some(Failure::Refused(match code? {
                40013 => TokenError::BadAppId,
                c @ (40125 | 40001) => TokenError::BadSecret { code: c },
                40164 => TokenError::IpNotWhitelisted { errmsg: text },
                40243 => TokenError::SecretFrozen,
                c => TokenError::Other {
                    code: c,
                    errmsg: text,
                },
            })),
            _ => None,
        }
    }
}

/// The token as this process keeps it.
struct Cached {
    token: Token,
    /// Handed out without asking Redis until then (the due time, or a short while when due).
    serve_until: Instant,
    /// No longer handed out after this.
    usable_until: Instant,
}

#[derive(Default)]
struct Local {
    cached: Option<Cached>,
    failure: Option<(Instant, Failure)>,
}

struct Inner {
    conn: Conn,
    token_key: String,
    lock_key: String,
    error_key: String,
    rejected_key: String,
    force_key: String,
    client: Client,
    app: AppId,
    secret: Secret,
    source: TokenSource,
    settings: TokenSettings,
    scripts: &'static Scripts,
    fetches: AtomicU64,
    local: Mutex<Local>,
    /// One task per process talks to Redis about the token at a time.
    gate: tokio::sync::Mutex<()>,
}

/// The fleet's shared access token of one app. Cheap to clone (clones share the cache);
/// build one per app per process.
#[derive(Clone)]
pub struct TokenStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("app", &self.inner.app)
            .field("source", &self.inner.source)
            .field("key", &self.inner.token_key)
            .finish_non_exhaustive()
    }
}

/// The reply of `token_acquire.lua`.
type AcquireReply = (String, i64, String, i64, i64, i64, String, i64);

impl TokenStore {
    /// The shared token of `app`, fetched from `source` (`secret` is WeChat's app secret; a
    /// token service source does not use it).
    pub fn new(
        conn: Conn,
        ns: Namespace,
        client: Client,
        app: AppId,
        secret: Secret,
        source: TokenSource,
        settings: TokenSettings,
    ) -> Self {
        let keys = Keys::new(ns);
        Self {
            inner: Arc::new(Inner {
                conn,
                token_key: keys.token(&app),
                lock_key: keys.token_lock(&app),
                error_key: keys.token_error(&app),
                rejected_key: keys.token_rejected(&app),
                force_key: keys.token_force(&app),
                client,
                app,
                secret,
                source,
                settings,
                scripts: scripts::get(),
                fetches: AtomicU64::new(0),
                local: Mutex::new(Local::default()),
                gate: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn app(&self) -> &AppId {
        &self.inner.app
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.inner.settings
    }

    /// Where this app's token comes from.
    pub fn source(&self) -> &TokenSource {
        &self.inner.source
    }

    /// Token requests this process sent to its source (each try counts, forced ones too).
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// A usable token: from this process's cache while fresh, else from Redis, else
    /// refreshed (by this process if it wins the fleet's lock, else by waiting for the winner).
    pub async fn get(&self) -> Result<Token, TokenStoreError> {
        if let Some(answer) = self.local_answer() {
            return answer;
        }
        let _gate = self.inner.gate.lock().await;
        if let Some(answer) = self.local_answer() {
            return answer;
        }
        match self.shared().await {
            // Redis failing is no reason to stop using a token WeChat still accepts.
            Err(TokenStoreError::Fleet(e)) => match self.usable_cached() {
                Some(token) => {
                    tracing::warn!(app = %self.inner.app, error = %e, "cannot read the shared access token; using this process's copy");
                    self.remember(&token, Instant::now() + self.inner.settings.poll_interval);
                    Ok(token)
                }
                None => Err(TokenStoreError::Fleet(e)),
            },
            other => other,
        }
    }

    /// Whether `token` is still this process's current token, as far as it knows without
    /// asking Redis: false once it was invalidated here (WeChat refused it to another job)
    /// or replaced by a newer one. For a caller that waited (for a rate permit, say) after
    /// `get` and should not spend a call on a token known to be refused.
    pub fn still_current(&self, token: &Token) -> bool {
        let now = Instant::now();
        self.lock_local()
            .cached
            .as_ref()
            .is_some_and(|c| c.token == *token && now < c.usable_until)
    }

    /// This process's copy of the token, if it is still usable.
    fn usable_cached(&self) -> Option<Token> {
        let now = Instant::now();
        self.lock_local()
            .cached
            .as_ref()
            .filter(|c| now < c.usable_until)
            .map(|c| c.token.clone())
    }

    /// After WeChat answered 40001/40014/42001 to a send with `failed`: drops the shared token
    /// if it is still `failed` and old enough (see [`Invalidation`]), and the local copy if it
    /// is `failed`. Then `get` again. For a `stable` source, a dropped token is also marked
    /// rejected, so the refresh may force a new one (see the module's comment).
    pub async fn invalidate(&self, failed: &Token) -> Result<Invalidation, TokenStoreError> {
        let inner = &self.inner;
        // A newer cached token means the shared one moved on already (it only ever moves to
        // later tokens): no round trip needed.
        if let Some(c) = &self.lock_local().cached {
            if c.token != *failed && c.token.fetched_at_ms > failed.fetched_at_ms {
                return Ok(Invalidation::AlreadyReplaced);
            }
        }
        let mark = inner.source == TokenSource::Stable;
        let code: i64 = inner
            .scripts
            .token_invalidate
            .key(&inner.token_key)
            .key(&inner.rejected_key)
            .arg(failed.expose())
            .arg(millis(inner.settings.min_refresh_interval))
            .arg(u8::from(mark))
            .invoke_async(&mut inner.conn.clone())
            .await?;
        let outcome = match code {
            1 => Invalidation::Invalidated,
            0 => Invalidation::AlreadyReplaced,
            2 => Invalidation::TooYoung,
            other => {
                return Err(
                    FleetError::Protocol(format!("token_invalidate answered {other}")).into(),
                )
            }
        };
        if outcome != Invalidation::TooYoung {
            let mut local = self.lock_local();
            if local.cached.as_ref().is_some_and(|c| c.token == *failed) {
                local.cached = None;
            }
        }
        match outcome {
            Invalidation::Invalidated => {
                tracing::info!(app = %inner.app, "access token invalidated after WeChat rejected it")
            }
            Invalidation::TooYoung => tracing::warn!(
                app = %inner.app,
                min_interval = ?inner.settings.min_refresh_interval,
                "WeChat rejected a fresh access token; keeping it (minimum refresh interval)"
            ),
            Invalidation::AlreadyReplaced => {}
        }
        Ok(outcome)
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer this process can give without Redis, if any.
    fn local_answer(&self) -> Option<Result<Token, TokenStoreError>> {
        let now = Instant::now();
        let local = self.lock_local();
        let usable = local
            .cached
            .as_ref()
            .filter(|c| now < c.usable_until)
            .map(|c| (c.token.clone(), now < c.serve_until));
        if let Some((token, true)) = &usable {
            return Some(Ok(token.clone()));
        }
        match &local.failure {
            Some((until, failure)) if now < *until => Some(match usable {
                Some((token, _)) => Ok(token),
                None => Err(failure.to_error(&self.inner.app, *until - now)),
            }),
            _ => None,
        }
    }

    fn remember(&self, token: &Token, serve_until: Instant) {
        let lifetime =
            Duration::from_millis(token.expires_at_ms.saturating_sub(token.fetched_at_ms));
        let usable_until = token
            .expires_at
            .checked_sub(self.inner.settings.usable_margin(lifetime))
            .unwrap_or(token.expires_at);
        self.lock_local().cached = Some(Cached {
            token: token.clone(),
            serve_until: serve_until.min(usable_until),
            usable_until,
        });
    }

    fn remember_failure(&self, failure: &Failure, for_: Duration) {
        self.lock_local().failure = Some((Instant::now() + for_, failure.clone()));
    }

    /// Redis, then a refresh. Called by one task of the process at a time.
    async fn shared(&self) -> Result<Token, TokenStoreError> {
        let inner = &self.inner;
        let started = Instant::now();
        let give_up = started + inner.settings.lock_lease + inner.settings.poll_interval * 4;
        let owner = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        loop {
            let sent = Instant::now();
            let (status, now, value, fetched, due, expires, error, error_ttl): AcquireReply = inner
                .scripts
                .token_acquire
                .key(&inner.token_key)
                .key(&inner.lock_key)
                .key(&inner.error_key)
                .arg(&owner)
                .arg(millis(inner.settings.lock_lease))
                .invoke_async(&mut inner.conn.clone())
                .await?;
            let current = (!value.is_empty())
                .then(|| self.token_at(sent, now, value, fetched, expires))
                .filter(|t| self.is_usable(t));
            let poll_until = Instant::now() + inner.settings.poll_interval;
            match status.as_str() {
                "fresh" => {
                    // `current` is None only for a token announced with a tiny lifetime.
                    if let Some(token) = current {
                        self.remember(&token, at(sent, now, due));
                        return Ok(token);
                    }
                }
                "busy" => {
                    if let Some(token) = current {
                        self.remember(&token, poll_until);
                        return Ok(token);
                    }
                }
                "error" => {
                    let failure = Failure::decode(&error).ok_or_else(|| {
                        FleetError::Protocol("unreadable remembered token failure".into())
                    })?;
                    let ttl = Duration::from_millis(u64::try_from(error_ttl).unwrap_or(0));
                    self.remember_failure(&failure, ttl);
                    return match current {
                        Some(token) => {
                            self.remember(&token, Instant::now() + ttl);
                            Ok(token)
                        }
                        None => Err(failure.to_error(&inner.app, ttl)),
                    };
                }
                "locked" => return self.refresh(&owner, current).await,
                other => {
                    return Err(FleetError::Protocol(format!(
                        "token_acquire answered status {other:?}"
                    ))
                    .into())
                }
            }
            if Instant::now() >= give_up {
                // The tasks queued behind this one get the same answer at once, rather than
                // each waiting as long again.
                let failure = Failure::Unavailable(TokenError::Transient {
                    code: None,
                    reason: "another process's token refresh took too long".into(),
                });
                self.remember_failure(&failure, inner.settings.remember_unavailable);
                return Err(TokenStoreError::WaitTimedOut {
                    app: inner.app.clone(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(inner.settings.poll_interval).await;
        }
    }

    /// Fetches a token while holding the fleet's lock, stores it and releases the lock.
    /// `current` is the still-usable token being replaced, if any.
    async fn refresh(&self, owner: &str, current: Option<Token>) -> Result<Token, TokenStoreError> {
        let inner = &self.inner;
        let started = Instant::now();
        let budget = inner.settings.lock_lease * 3 / 4;
        let fetched = match tokio::time::timeout(budget, self.fetch_fresh(owner)).await {
            Ok(Ok(t)) if t.expires_in_secs > 0 => Ok(t),
            Ok(Ok(_)) => Err(TokenError::Transient {
                code: None,
                reason: "WeChat announced a token lifetime of 0 s".into(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TokenError::Transient {
                code: None,
                reason: format!("no answer within {budget:?}"),
            }),
        };
        let access = match fetched {
            Ok(access) => access,
            Err(e) => return self.refresh_failed(owner, e, current).await,
        };
        // The client bounds lifetimes already; bounding again here keeps every product below
        // (ms, Instant) finite whatever an AccessToken says.
        let lifetime = Duration::from_secs(access.expires_in_secs.min(MAX_TOKEN_LIFETIME_SECS));
        let sent = Instant::now();
        let published: Result<(i64, i64, i64, i64, i64), _> = inner
            .scripts
            .token_publish
            .key(&inner.token_key)
            .key(&inner.lock_key)
            .key(&inner.error_key)
            .key(&inner.rejected_key)
            .arg(owner)
            .arg(&access.token)
            .arg(millis(lifetime))
            .arg(millis(started.elapsed()))
            .arg(millis(inner.settings.refresh_margin(lifetime)))
            .arg(millis(Duration::from_secs(MAX_TOKEN_LIFETIME_SECS)))
            .invoke_async(&mut inner.conn.clone())
            .await;
        let AccessToken { token: value, .. } = access;
        match published {
            Ok((now, fetched, due, expires, stored)) => {
                let token = self.token_at(sent, now, value, fetched, expires);
                metrics::counter!(crate::metrics::TOKEN_REFRESHES).increment(1);
                if stored == 1 {
                    self.remember(&token, at(sent, now, due));
                    tracing::info!(app = %inner.app, lifetime = ?lifetime, "access token refreshed");
                } else {
                    // Our lease ran out and a newer token is shared: use ours this once only.
                    tracing::warn!(app = %inner.app, "refreshed access token not shared: the refresh lock's lease ran out");
                }
                Ok(token)
            }
            Err(e) => {
                // WeChat issued a good token: use it here; the fleet gets one after the lease.
                tracing::warn!(app = %inner.app, error = %e, "cannot share the refreshed access token");
                let expires_at = started.checked_add(lifetime).unwrap_or(started);
                let token = Token {
                    value: value.into(),
                    fetched_at_ms: 0,
                    expires_at_ms: 0,
                    expires_at,
                };
                let due = expires_at
                    .checked_sub(inner.settings.refresh_margin(lifetime))
                    .unwrap_or(started);
                self.remember(&token, due);
                Ok(token)
            }
        }
    }

    async fn refresh_failed(
        &self,
        owner: &str,
        e: TokenError,
        current: Option<Token>,
    ) -> Result<Token, TokenStoreError> {
        let inner = &self.inner;
        let failure = Failure::of(e);
        let first = match failure {
            Failure::Refused(_) => inner.settings.remember_refusal,
            Failure::Unavailable(_) => inner.settings.remember_unavailable,
        };
        match &failure {
            Failure::Refused(e) => {
                tracing::error!(app = %inner.app, error = %e, "WeChat refused an access token")
            }
            Failure::Unavailable(e) => {
                tracing::warn!(app = %inner.app, error = %e, "access token refresh failed")
            }
        }
        let released: Result<i64, _> = inner
            .scripts
            .token_release
            .key(&inner.lock_key)
            .key(&inner.error_key)
            .arg(owner)
            .arg(failure.encode())
            .arg(millis(first))
            .arg(millis(inner.settings.remember_max.max(first)))
            .invoke_async(&mut inner.conn.clone())
            .await;
        let remember_for = match released {
            Ok(ms) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)).max(first),
            Err(e) => {
                // The lease frees the lock anyway.
                tracing::warn!(app = %inner.app, error = %e, "cannot release the token refresh lock");
                first
            }
        };
        if remember_for > first {
            tracing::warn!(app = %inner.app, ask_again_in = ?remember_for, "the token endpoint failed again: asking it less often");
        }
        self.remember_failure(&failure, remember_for);
        match current {
            Some(token) => {
                // Still usable: served from this process's cache until the fleet asks again.
                self.remember(&token, Instant::now() + remember_for);
                Ok(token)
            }
            None => Err(failure.to_error(&inner.app, remember_for)),
        }
    }

    /// One request to the app's token source.
    async fn fetch_once(&self, force_refresh: bool) -> Result<AccessToken, TokenError> {
        let inner = &self.inner;
        inner.fetches.fetch_add(1, Ordering::Relaxed);
        match &inner.source {
            TokenSource::Stable => {
                inner
                    .client
                    .fetch_stable_token(&inner.app, &inner.secret, force_refresh)
                    .await
            }
            TokenSource::Classic => inner.client.fetch_token(&inner.app, &inner.secret).await,
            TokenSource::Service(url) => inner.client.fetch_service_token(url).await,
        }
    }

    /// A token for the refresh: fetched with retries and, for a `stable` source that answered
    /// the token the fleet saw rejected, replaced by a forced one if the budget allows.
    async fn fetch_fresh(&self, owner: &str) -> Result<AccessToken, TokenError> {
        let fetched = self.fetch_with_retries().await?;
        if self.inner.source != TokenSource::Stable {
            return Ok(fetched);
        }
        Ok(self.replace_if_rejected(fetched, owner).await)
    }

    /// `fetched` came from `stable_token` without `force_refresh`. If it is the token marked
    /// rejected (WeChat refused it while it was the fleet's current token, and still answers
    /// it), spends one of the fleet's forced refreshes on a new one, if the budget allows now.
    /// Any failure here keeps `fetched`: sends then retry later.
    async fn replace_if_rejected(&self, fetched: AccessToken, owner: &str) -> AccessToken {
        let inner = &self.inner;
        let rejected: Option<String> = match redis::cmd("GET")
            .arg(&inner.rejected_key)
            .query_async(&mut inner.conn.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(app = %inner.app, error = %e, "cannot read the rejected access token mark");
                return fetched;
            }
        };
        if rejected.as_deref() != Some(fetched.token.as_str()) {
            return fetched;
        }
        let spent: Result<(i64, i64, i64), _> = inner
            .scripts
            .token_force
            .key(&inner.force_key)
            .arg(FORCE_REFRESH_PER_DAY)
            .arg(millis(FORCE_REFRESH_SPACING))
            .arg(millis(FORCE_REFRESH_WINDOW))
            .arg(owner)
            .invoke_async(&mut inner.conn.clone())
            .await;
        let (allowed, used, wait_ms) = match spent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(app = %inner.app, error = %e, "cannot count a forced access token refresh; not forcing one");
                return fetched;
            }
        };
        if allowed != 1 {
            tracing::warn!(
                app = %inner.app,
                used,
                next_in = ?Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
                "WeChat still answers the access token it rejected, and the fleet's force_refresh \
                 budget ({FORCE_REFRESH_PER_DAY} in 24 h, 30 s apart) allows none now: keeping it"
            );
            return fetched;
        }
        match self.fetch_once(true).await {
            Ok(forced) => {
                tracing::info!(
                    app = %inner.app,
                    used,
                    "WeChat rejected its current access token: forced a new one \
                     ({used} of {FORCE_REFRESH_PER_DAY} forced refreshes in 24 h)"
                );
                forced
            }
            Err(e) => {
                tracing::warn!(app = %inner.app, error = %e, "forced access token refresh failed; keeping the rejected token");
                fetched
            }
        }
    }

    async fn fetch_with_retries(&self) -> Result<AccessToken, TokenError> {
        let inner = &self.inner;
        let attempt = || self.fetch_once(false);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(inner.settings.retry_min_delay)
            .with_max_delay(inner.settings.retry_max_delay)
            .with_max_times(inner.settings.fetch_retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(TokenError::is_transient)
            .notify(|e, wait| {
                tracing::warn!(app = %inner.app, error = %e, retry_in = ?wait, "access token fetch failed; retrying");
            })
            .await
    }

    /// A token read from Redis at Redis time `now` (ms), the request having been sent at
    /// `sent`: local instants err early.
    fn token_at(
        &self,
        sent: Instant,
        now: i64,
        value: String,
        fetched: i64,
        expires: i64,
    ) -> Token {
        Token {
            value: value.into(),
            fetched_at_ms: u64::try_from(fetched).unwrap_or(0),
            expires_at_ms: u64::try_from(expires).unwrap_or(0),
            expires_at: at(sent, now, expires),
        }
    }

    fn is_usable(&self, token: &Token) -> bool {
        let lifetime =
            Duration::from_millis(token.expires_at_ms.saturating_sub(token.fetched_at_ms));
        token.remaining() > self.inner.settings.usable_margin(lifetime)
    }
}

/// The local instant of Redis time `then_ms`, Redis having said `now_ms` after `sent`.
fn at(sent: Instant, now_ms: i64, then_ms: i64) -> Instant {
    let ahead = u64::try_from(then_ms.saturating_sub(now_ms)).unwrap_or(0);
    sent + Duration::from_millis(ahead)
}

/// A duration in whole ms, at least 1 (Redis refuses `PX 0`).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_scale_with_the_lifetime() {
        let s = TokenSettings::default();
        assert_eq!(
            s.refresh_margin(Duration::from_secs(7200)),
            Duration::from_secs(200)
        );
        assert_eq!(
            s.refresh_margin(Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        assert_eq!(
            s.usable_margin(Duration::from_secs(7200)),
            Duration::from_secs(20)
        );
        assert_eq!(
            s.usable_margin(Duration::from_secs(4)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn failures_survive_the_shared_encoding() {
        let all = [
            Failure::Refused(TokenError::BadAppId),
            Failure::Refused(TokenError::BadSecret { code: 40125 }),
            Failure::Refused(TokenError::BadSecret { code: 40001 }),
            Failure::Refused(TokenError::IpNotWhitelisted {
                errmsg: "invalid ip 1.2.3.4 | x".into(),
            }),
            Failure::Refused(TokenError::SecretFrozen),
            Failure::Refused(TokenError::Other {
                code: 45009,
                errmsg: "reach max api daily quota limit".into(),
            }),
            Failure::Unavailable(TokenError::Transient {
                code: Some(-1),
                reason: "WeChat busy: system error".into(),
            }),
            Failure::Unavailable(TokenError::Transient {
                code: None,
                reason: "timed out".into(),
            }),
        ];
        for f in all {
            assert_eq!(Failure::decode(&f.encode()), Some(f.clone()), "{f:?}");
        }
        assert_eq!(Failure::decode("garbage"), None);
        assert_eq!(Failure::decode("R||x"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_failure_text_survives_the_shared_encoding(code in proptest::num::i64::ANY, text in ".*", transient in proptest::bool::ANY) {
            let f = if transient {
                Failure::Unavailable(TokenError::Transient { code: Some(code), reason: text })
            } else {
                Failure::Refused(TokenError::Other { code: 50_000 + code.rem_euclid(1000), errmsg: text })
            };
            proptest::prop_assert_eq!(Failure::decode(&f.encode()), Some(f));
        }
    }

    #[test]
    fn token_debug_hides_the_token() {
        let t = Token {
            value: "TOKEN_VALUE_XYZ".into(),
            fetched_at_ms: 1,
            expires_at_ms: 2,
            expires_at: Instant::now(),
        };
        let d = format!("{t:?}");
        assert!(!d.contains("TOKEN_VALUE_XYZ"), "{d}");
    }
}
