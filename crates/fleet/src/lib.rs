//! What the `send` processes of one install share through Redis.
//!
//! This crate owns three fleet-wide mechanisms and the guarantees behind them:
//! - **the access token** ([`TokenStore`]): one token per app for the whole fleet, from the
//!   app's token source (`stable_token` by default, the classic `/cgi-bin/token`, or the
//!   install's token service), refreshed ahead of expiry by one process at a time (a lease
//!   lock), invalidated only if it is still the one that failed and no more often than a
//!   minimum interval, with failed fetches remembered so a fleet never hammers WeChat's token
//!   endpoint, and `force_refresh` spent only on a rejected current token, within WeChat's 20 a
//!   day, 30 s apart (see WECHAT.md, "Access token").
//! - **the send rate** ([`RateLimiter`]): at most `WXPUSH_SEND_RATE` sends per second for all
//!   processes together, a token bucket in Redis that processes draw from in small batches.
//! - **the pause** ([`FleetPause`]): after WeChat's daily-quota answer (45009) every process
//!   stops sending until a cool-down ends.
//!
//! Time is Redis's own (`TIME` inside the scripts), so the processes share one clock. Key
//! layout: [`keys`]. Every key expires by itself. This crate must not know about RabbitMQ, the
//! credential bank or message formats, must not decide what a send's outcome means (the
//! caller tells it: a bad token, a daily quota), and must never let an app secret or an access
//! token reach an error message, a `Debug` print or a log line.

pub mod keys;
pub mod metrics;
mod pause;
mod rate;
mod scripts;
mod token;

pub use keys::Keys;
pub use pause::{FleetPause, PauseSettings};
pub use rate::{batch_for, capacity_for, max_calls_per_second, Permit, RateLimiter, RateSettings};
pub use token::{
    Invalidation, Token, TokenSettings, TokenStore, TokenStoreError, FORCE_REFRESH_PER_DAY,
    FORCE_REFRESH_SPACING,
};

/// What can go wrong talking to Redis for the fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from a fleet script: {0}")]
    Protocol(String),
}

impl FleetError {
    /// True when retrying later may succeed (Redis down, timed out, loading, failing over).
    pub fn is_transient(&self) -> bool {
        match self {
            FleetError::Redis(e) => wxpush_redis::is_transient(e),
            FleetError::Protocol(_) => false,
        }
    }
}
