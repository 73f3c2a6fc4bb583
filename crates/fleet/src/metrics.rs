//! The names of the metrics this crate records (through the `metrics` facade). The roles'
//! `metrics` module lists them with the others and describes them; this module must not
//! install a recorder.

pub const RATE_LIMIT_WAITS: &str = "wxpush_rate_limit_waits_total";
pub const RATE_LIMIT_WAIT_MS: &str = "wxpush_rate_limit_wait_milliseconds_total";
pub const TOKEN_REFRESHES: &str = "wxpush_token_refreshes_total";
