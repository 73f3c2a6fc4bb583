//! Access tokens as WeChat issues them, and the typed failures of fetching one.
//!
//! This module owns the token value (whose `Debug` never shows it) and the errcode table of the
//! token endpoints. It must not cache, share or refresh tokens: that is the fleet's job.

use std::fmt;

/// An access token and the lifetime WeChat announced for it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The token itself. Never print it; `Debug` shows `***`.
    pub token: String,
    /// Seconds the token stays valid from the moment WeChat answered (7200 in production).
    pub expires_in_secs: u64,
}

impl AccessToken {
    pub fn new(token: impl Into<String>, expires_in_secs: u64) -> Self {
        Self {
            token: token.into(),
            expires_in_secs,
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("expires_in_secs", &self.expires_in_secs)
            .finish()
    }
}

/// Why no token was obtained. None of these carries the secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// 40013: WeChat does not know this appid.
    #[error("WeChat rejected the appid (40013)")]
    BadAppId,
    /// 40125, or 40001 on a token fetch: the app secret is wrong.
    #[error("WeChat rejected the app secret ({code})")]
    BadSecret { code: i64 },
    /// 40164: this server's IP is not in the app's whitelist.
    #[error("this server's IP is not whitelisted for the app (40164): {errmsg}")]
    IpNotWhitelisted { errmsg: String },
    /// 40243: the app secret is frozen.
    #[error("the app secret is frozen (40243)")]
    SecretFrozen,
    /// -1, HTTP 5xx, a timeout, a connection failure or an unreadable answer: try again later.
    #[error("token fetch failed, try again later{}: {reason}", code.map(|c| format!(" (errcode {c})")).unwrap_or_default())]
    Transient { code: Option<i64>, reason: String },
    /// Any other answer (40002 bad grant_type, 45009 daily limit, unknown codes, HTTP 4xx).
    #[error("token fetch refused ({code}): {errmsg}")]
    Other { code: i64, errmsg: String },
}

impl TokenError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::Transient { .. })
    }
}

/// The token endpoints' errcode table. `errmsg` must already be scrubbed.
pub(crate) fn classify_token_errcode(code: i64, errmsg: String) -> TokenError {
    match code {
        -1 => TokenError::Transient {
            code: Some(-1),
            reason: format!("WeChat busy: {errmsg}"),
        },
        40013 => TokenError::BadAppId,
        40125 | 40001 => TokenError::BadSecret { code },
        40164 => TokenError::IpNotWhitelisted { errmsg },
        40243 => TokenError::SecretFrozen,
        _ => TokenError::Other { code, errmsg },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_token() {
        let t = AccessToken::new("ACCESS_TOKEN_VALUE_123", 7200);
        let d = format!("{t:?}");
        assert!(!d.contains("ACCESS_TOKEN_VALUE_123"), "{d}");
        assert!(d.contains("7200"));
    }

    #[test]
    fn token_table() {
        assert_eq!(
            classify_token_errcode(40013, String::new()),
            TokenError::BadAppId
        );
        assert_eq!(
            classify_token_errcode(40125, String::new()),
            TokenError::BadSecret { code: 40125 }
        );
        assert_eq!(
            classify_token_errcode(40001, String::new()),
            TokenError::BadSecret { code: 40001 }
        );
        assert!(matches!(
            classify_token_errcode(40164, "ip 1.2.3.4".into()),
            TokenError::IpNotWhitelisted { .. }
        ));
        assert_eq!(
            classify_token_errcode(40243, String::new()),
            TokenError::SecretFrozen
        );
        assert!(classify_token_errcode(-1, "busy".into()).is_transient());
        assert!(matches!(
            classify_token_errcode(40002, "bad grant".into()),
            TokenError::Other { code: 40002, .. }
        ));
    }
}
