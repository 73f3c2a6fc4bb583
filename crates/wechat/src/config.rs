//! Client settings: base URL, timeouts and pool size, with the defaults wxpush runs with.
//!
//! This module owns only the values. It must not read the environment (the domain crate's
//! `Config` does that) nor build anything.

use std::time::Duration;

/// WeChat's production API base.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// Time allowed to open a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for a whole request, from sending to the last byte of the answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole token request (`/cgi-bin/token`, `/cgi-bin/stable_token`, a token
/// service): longer than a send's, since one token serves the whole fleet and a slow token
/// endpoint must still be able to answer, but bounded, so a hung one holds nobody for long.
pub const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Scheme, host and optional port, e.g. `https://api.weixin.qq.com` or
    /// `http://127.0.0.1:8089`. A trailing `/` is ignored.
    pub base_url: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Time allowed for a whole token request ([`DEFAULT_TOKEN_TIMEOUT`]).
    pub token_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// How long an idle keep-alive connection is kept.
    pub pool_idle_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_API_BASE.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            token_timeout: DEFAULT_TOKEN_TIMEOUT,
            pool_max_idle_per_host: 256,
            pool_idle_timeout: Duration::from_secs(50),
        }
    }
}

impl ClientConfig {
    /// The defaults, with another base URL.
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ..Self::default()
        }
    }
}
