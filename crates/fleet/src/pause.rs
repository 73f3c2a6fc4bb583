//! Stopping one app's sends fleet-wide: [`FleetPause`].
//!
//! After WeChat's daily-quota answer (45009) a sender calls [`FleetPause::pause_for`] with the
//! configured cool-down (and, for as long as the fleet will not ask again, after the token
//! endpoint refused or failed, or WeChat refused a fresh token); every process then sees [`FleetPause::paused_for`] answer `Some` until
//! it ends. The pause is one key holding its end (Redis clock) with a PX expiry, so it ends by
//! itself; setting it has GT semantics (one script): a shorter pause never shortens a longer
//! one. Answers are cached in-process for `cache_for` (default 200 ms), so checking before
//! every send costs a Redis round trip at most five times a second; a pause set elsewhere is
//! seen within `cache_for` plus one round trip. This module must not decide when to pause.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wxpush_domain::{AppId, Namespace};
use wxpush_redis::Conn;

use crate::keys::Keys;
use crate::scripts::{self, Scripts};
use crate::token::millis;
use crate::FleetError;

/// Tunables of a [`FleetPause`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseSettings {
    /// How long an answer from Redis is reused in-process. Default 200 ms.
    pub cache_for: Duration,
}

impl Default for PauseSettings {
    fn default() -> Self {
        Self {
            cache_for: Duration::from_millis(200),
        }
    }
}

#[derive(Clone, Copy)]
struct Known {
    checked_at: Instant,
    /// When the pause ends, if one was running at `checked_at`.
    until: Option<Instant>,
}

struct Inner {
    conn: Conn,
    key: String,
    app: AppId,
    settings: PauseSettings,
    scripts: &'static Scripts,
    known: Mutex<Option<Known>>,
}

/// One app's fleet-wide send pause. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct FleetPause {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FleetPause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetPause")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl FleetPause {
    pub fn new(conn: Conn, ns: Namespace, app: AppId, settings: PauseSettings) -> Self {
        let key = Keys::new(ns).pause(&app);
        Self {
            inner: Arc::new(Inner {
                conn,
                key,
                app,
                settings,
                scripts: scripts::get(),
                known: Mutex::new(None),
            }),
        }
    }

    pub fn app(&self) -> &AppId {
        &self.inner.app
    }

    /// Pauses the app's sends fleet-wide for `duration` from now, unless a longer pause is
    /// already running. Returns how long the pause now lasts.
    pub async fn pause_for(&self, duration: Duration) -> Result<Duration, FleetError> {
        let sent = Instant::now();
        let (left_ms, set): (i64, i64) = self
            .inner
            .scripts
            .pause
            .key(&self.inner.key)
            .arg(millis(duration))
            .invoke_async(&mut self.inner.conn.clone())
            .await?;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        self.set_known(sent, Some(sent + left));
        if set == 1 {
            tracing::warn!(app = %self.inner.app, pause = ?left, "sending paused fleet-wide");
        } else {
            tracing::debug!(app = %self.inner.app, pause = ?left, "sending already paused fleet-wide");
        }
        Ok(left)
    }

    /// Pauses the app's sends fleet-wide until `until` (this machine's clock), unless a longer
    /// pause is already running. A time in the past does nothing. Returns how long the pause
    /// now lasts.
    pub async fn pause_until(&self, until: SystemTime) -> Result<Duration, FleetError> {
        match until.duration_since(SystemTime::now()) {
            Ok(d) if !d.is_zero() => self.pause_for(d).await,
            _ => Ok(self.try_paused_for().await?.unwrap_or_default()),
        }
    }

    /// How long sending stays paused, `None` when it is not. On a Redis failure, the last
    /// known answer (logged).
    pub async fn paused_for(&self) -> Option<Duration> {
        match self.try_paused_for().await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(app = %self.inner.app, error = %e, "cannot read the fleet pause; using the last known answer");
                let now = Instant::now();
                let last = self.known().and_then(|k| k.until);
                // Don't ask again before `cache_for`.
                self.set_known(now, last);
                last.map(|u| u.saturating_duration_since(now))
                    .filter(|d| !d.is_zero())
            }
        }
    }

    /// Like [`Self::paused_for`], but a Redis failure is an error.
    pub async fn try_paused_for(&self) -> Result<Option<Duration>, FleetError> {
        let now = Instant::now();
        if let Some(k) = self.known() {
            if now.duration_since(k.checked_at) < self.inner.settings.cache_for {
                return Ok(k
                    .until
                    .map(|u| u.saturating_duration_since(now))
                    .filter(|d| !d.is_zero()));
            }
        }
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&self.inner.key)
            .query_async(&mut self.inner.conn.clone())
            .await?;
        // -2: no pause. -1 (no expiry) cannot happen: the key is only ever set with PX.
        let left = u64::try_from(ttl_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        self.set_known(now, left.map(|d| now + d));
        Ok(left)
    }

    fn known(&self) -> Option<Known> {
        *self
            .inner
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_known(&self, checked_at: Instant, until: Option<Instant>) {
        *self
            .inner
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Known { checked_at, until });
    }
}
