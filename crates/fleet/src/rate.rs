//! The fleet-wide send rate of one app: [`RateLimiter`].
//!
//! All sender processes draw from one token bucket in Redis (`rate.lua`, one key, Redis's
//! clock in µs): it refills `rate` permits a second up to `capacity` = `max(batch, rate / 20)`.
//! To cost about one round trip per `batch` sends rather than one per send, a process reserves
//! permits `batch` = `clamp(rate / 100, 1, 50)` at a time (taking what is there, but not fewer
//! than `ceil(batch / 2)`), hands them out locally, and discards local permits older than
//! `permit_max_age` (default 50 ms), so unused permits are never spent later in a burst. When the
//! bucket runs short, the script says how long until enough permits are there again and the
//! process sleeps that long before asking again (no busy loop); one task per process asks
//! Redis at a time.
//!
//! # The bound ([`max_calls_per_second`], the one place it is computed)
//!
//! The bucket never holds more than `capacity` permits, so in any window of `L` seconds it
//! grants at most `capacity + rate × L`. A permit is used no earlier than Redis granted it and
//! its call starts no later than `permit_max_age` after its reservation was *sent* (the caller
//! checks [`Permit::is_fresh`] just before the call; a stale permit is never used, the caller
//! takes another). So the calls started in any 1-second window (sliding, not only aligned
//! ones) come from grants in a window of `1 + permit_max_age` seconds, and, permits being
//! whole, **in any 1-second window the fleet starts at most
//! `floor(capacity + rate × (1 + permit_max_age))` calls**: with the defaults
//! `floor(rate × 1.05 + capacity)`, `capacity` = `max(batch, rate / 20)` being the burst, i.e.
//! at most about 10 % over the rate (22 at 20/s, 550 at 500/s, 5,500 at 5,000/s). WeChat sees
//! each call later by its network delay; only the *spread* of that delay (a few ms between
//! hosts in one region) can add to a window there. Over a long run of `D` seconds, calls ≤
//! `rate × D + capacity`. A fleet whose processes disagree on the rate gets the rate of
//! whichever process asks at that moment.
//!
//! This module must not decide what the rate is (the configuration does) nor send anything.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wxpush_domain::{AppId, Namespace};
use wxpush_redis::Conn;

use crate::keys::Keys;
use crate::scripts::{self, Scripts};
use crate::FleetError;

/// Tunables of a [`RateLimiter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSettings {
    /// Local permits older than this are discarded. Default 50 ms.
    pub permit_max_age: Duration,
    /// Longest sleep before asking Redis again (a rate raised elsewhere is noticed by then).
    /// Default 1 s.
    pub max_wait: Duration,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            permit_max_age: Duration::from_millis(50),
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Permits reserved from the bucket and not yet handed out.
struct Permits {
    left: u32,
    reserved_at: Instant,
    /// Not worth asking Redis before this: the bucket will not hold enough permits sooner.
    next_ask: Instant,
}

struct Inner {
    conn: Conn,
    key: String,
    app: AppId,
    rate: AtomicU32,
    settings: RateSettings,
    scripts: &'static Scripts,
    local: Mutex<Permits>,
    /// One task per process asks Redis at a time.
    gate: tokio::sync::Mutex<()>,
    round_trips: AtomicU64,
    discarded: AtomicU64,
}

/// The fleet-wide send rate of one app. Cheap to clone (clones share their permits).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("key", &self.inner.key)
            .field("rate", &self.rate())
            .finish_non_exhaustive()
    }
}

/// Leave to make one send call, from [`RateLimiter::acquire`].
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    reserved_at: Instant,
    max_age: Duration,
}

impl Permit {
    /// Whether a call made now keeps the fleet's bound: the permit was reserved no longer
    /// than `permit_max_age` ago. A caller that waited on something else after taking it
    /// (a slow Redis, a stalled process) must take another instead.
    pub fn is_fresh(&self) -> bool {
        self.reserved_at.elapsed() <= self.max_age
    }
}

/// Permits reserved per round trip at `rate` per second: `clamp(rate / 100, 1, 50)`.
pub fn batch_for(rate: u32) -> u32 {
    (rate / 100).clamp(1, 50)
}

/// The bucket's capacity (largest burst) at `rate` per second: `max(batch, rate / 20)`.
pub fn capacity_for(rate: u32) -> u32 {
    batch_for(rate).max(rate / 20)
}

/// The most calls the fleet starts in any 1-second window at `rate` per second (at least 1),
/// burst included, when every call starts within `permit_max_age` of its permit's
/// reservation: `floor(capacity + rate × (1 + permit_max_age))` (see the module
/// documentation). The limiter, its docs and the tests all take the bound from here.
pub fn max_calls_per_second(rate: u32, permit_max_age: Duration) -> u32 {
    let rate = rate.max(1);
    let age_us = u64::try_from(permit_max_age.as_micros()).unwrap_or(u64::MAX);
    // In whole µs so the floor is exact: rate × (1 s + age) / 1 s.
    let over_window =
        u64::from(rate).saturating_mul(1_000_000u64.saturating_add(age_us)) / 1_000_000;
    let bound = u64::from(capacity_for(rate)).saturating_add(over_window);
    u32::try_from(bound).unwrap_or(u32::MAX)
}

impl RateLimiter {
    /// A limiter of `rate` sends per second (at least 1) for all processes together.
    pub fn new(conn: Conn, ns: Namespace, app: AppId, rate: u32, settings: RateSettings) -> Self {
        let key = Keys::new(ns).rate(&app);
        Self {
            inner: Arc::new(Inner {
                conn,
                key,
                app,
                rate: AtomicU32::new(rate.max(1)),
                settings,
                scripts: scripts::get(),
                local: Mutex::new(Permits {
                    left: 0,
                    reserved_at: Instant::now(),
                    next_ask: Instant::now(),
                }),
                gate: tokio::sync::Mutex::new(()),
                round_trips: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
            }),
        }
    }

    pub fn app(&self) -> &AppId {
        &self.inner.app
    }

    /// Sends per second, fleet-wide.
    pub fn rate(&self) -> u32 {
        self.inner.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate (at least 1) from the next reservation on.
    pub fn set_rate(&self, rate: u32) {
        self.inner.rate.store(rate.max(1), Ordering::Relaxed);
    }

    /// Permits reserved per round trip.
    pub fn batch(&self) -> u32 {
        batch_for(self.rate())
    }

    /// The bucket's capacity.
    pub fn capacity(&self) -> u32 {
        capacity_for(self.rate())
    }

    /// Most calls the fleet starts in any 1-second window at this limiter's rate and
    /// settings: [`max_calls_per_second`].
    pub fn max_per_second(&self) -> u32 {
        max_calls_per_second(self.rate(), self.inner.settings.permit_max_age)
    }

    /// Round trips to Redis so far (for benchmarks).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Permits reserved but discarded unused because they grew too old.
    pub fn discarded(&self) -> u64 {
        self.inner.discarded.load(Ordering::Relaxed)
    }

    /// Waits until this process may make one send. The permit must be used at once: the
    /// bound above holds only for a call made within `permit_max_age` of the permit's
    /// reservation, which [`Permit::is_fresh`] tells just before the call.
    pub async fn acquire(&self) -> Result<Permit, FleetError> {
        if let Some(p) = self.take_local() {
            return Ok(p);
        }
        let _gate = self.inner.gate.lock().await;
        if let Some(p) = self.take_local() {
            return Ok(p);
        }
        loop {
            let next_ask = self.lock_local().next_ask;
            let now = Instant::now();
            if next_ask > now {
                let wait = next_ask - now;
                metrics::counter!(crate::metrics::RATE_LIMIT_WAITS).increment(1);
                metrics::counter!(crate::metrics::RATE_LIMIT_WAIT_MS)
                    .increment(wait.as_micros() as u64 / 1000);
                tokio::time::sleep_until(next_ask.into()).await;
            }
            let rate = self.rate();
            let batch = batch_for(rate);
            let sent = Instant::now();
            let (granted, wait_us): (u32, u64) = self
                .inner
                .scripts
                .rate
                .key(&self.inner.key)
                .arg(rate)
                .arg(capacity_for(rate))
                .arg(batch)
                .arg(batch.div_ceil(2))
                .invoke_async(&mut self.inner.conn.clone())
                .await?;
            self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
            let wait = Duration::from_micros(wait_us).min(self.inner.settings.max_wait);
            let mut local = self.lock_local();
            if granted > 0 {
                local.left = granted - 1;
                local.reserved_at = sent;
                local.next_ask = sent + wait;
                return Ok(Permit {
                    reserved_at: sent,
                    max_age: self.inner.settings.permit_max_age,
                });
            }
            // Never ask again at once after a refusal (a guard: the script's wait is > 0 then).
            local.next_ask = sent + wait.max(Duration::from_micros(100));
        }
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, Permits> {
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a local permit if a young enough one is left; discards old ones.
    fn take_local(&self) -> Option<Permit> {
        let mut local = self.lock_local();
        if local.left == 0 {
            return None;
        }
        if local.reserved_at.elapsed() > self.inner.settings.permit_max_age {
            self.inner
                .discarded
                .fetch_add(u64::from(local.left), Ordering::Relaxed);
            local.left = 0;
            return None;
        }
        local.left -= 1;
        Some(Permit {
            reserved_at: local.reserved_at,
            max_age: self.inner.settings.permit_max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_and_capacity() {
        assert_eq!((batch_for(1), capacity_for(1)), (1, 1));
        assert_eq!((batch_for(200), capacity_for(200)), (2, 10));
        assert_eq!((batch_for(500), capacity_for(500)), (5, 25));
        assert_eq!((batch_for(5000), capacity_for(5000)), (50, 250));
        assert_eq!((batch_for(100_000), capacity_for(100_000)), (50, 5000));
    }

    #[test]
    fn the_bound_per_second() {
        let age = RateSettings::default().permit_max_age;
        assert_eq!(max_calls_per_second(1, age), 2);
        assert_eq!(max_calls_per_second(20, age), 22);
        assert_eq!(max_calls_per_second(40, age), 44);
        assert_eq!(max_calls_per_second(200, age), 220);
        assert_eq!(max_calls_per_second(500, age), 550);
        assert_eq!(max_calls_per_second(5000, age), 5500);
        assert_eq!(max_calls_per_second(20, Duration::ZERO), 21);
        assert_eq!(max_calls_per_second(0, age), 2, "a rate of 0 is 1");
    }
}
