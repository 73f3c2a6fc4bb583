//! The fleet's Redis key layout, in one place.
//!
//! ```text
//! {ns}:token:{<app>}        hash    the shared access token: t (token), f (fetched), d (due for
//!                                    refresh), e (expires), all Unix ms on Redis's clock;
//!                                    expires with the token (PEXPIRE)
//! {ns}:token-lock:{<app>}   string  owner id of the one process refreshing the token (PX lease)
//! {ns}:token-err:{<app>}    string  the last failed refresh, so the fleet does not hammer the
//!                                    token endpoint: "<until ms>|<streak>|<failure>", asked
//!                                    again after `until` (doubling with the streak, up to
//!                                    5 min); PX: `until` plus 5 min, deleted by a new token
//! {ns}:token-rejected:{<app>} string a stable token WeChat rejected while it was the shared one
//!                                    (PX: the rest of that token's life)
//! {ns}:token-force:{<app>}  zset    the fleet's `force_refresh: true` calls of the last 24 h,
//!                                    scored by Redis ms (PX: 24 h after the last one)
//! {ns}:rate:{<app>}         hash    the send-rate token bucket: k (permits left), ts (Redis µs);
//!                                    PX: the time a full refill takes, plus one second
//! {ns}:pause:{<app>}        string  fleet-wide send pause: its end (Unix ms, Redis clock), PX
//! ```
//!
//! Every key of one app shares the hash tag `{<app>}`, so each script touches one Redis Cluster
//! slot, and every key expires by itself. The namespace and the appid are word characters
//! only (`wxpush-domain` checks), so neither can open or close a hash tag. This module must not
//! talk to Redis.

use wxpush_domain::{AppId, Namespace};

/// Builds the fleet keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: Namespace,
}

impl Keys {
    pub fn new(ns: Namespace) -> Self {
        Self { ns }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    fn key(&self, kind: &str, app: &AppId) -> String {
        wxpush_redis::tagged(&self.ns, kind, app, None)
    }

    /// The shared access token of `app`.
    pub fn token(&self, app: &AppId) -> String {
        self.key("token", app)
    }

    /// The refresh lock of `app`'s token.
    pub fn token_lock(&self, app: &AppId) -> String {
        self.key("token-lock", app)
    }

    /// The remembered failure of `app`'s last token refresh.
    pub fn token_error(&self, app: &AppId) -> String {
        self.key("token-err", app)
    }

    /// The `stable` token WeChat rejected while it was `app`'s shared one.
    pub fn token_rejected(&self, app: &AppId) -> String {
        self.key("token-rejected", app)
    }

    /// The times of `app`'s forced token refreshes (the budget WeChat limits to 20 a day).
    pub fn token_force(&self, app: &AppId) -> String {
        self.key("token-force", app)
    }

    /// The send-rate bucket of `app`.
    pub fn rate(&self, app: &AppId) -> String {
        self.key("rate", app)
    }

    /// The fleet-wide send pause of `app`.
    pub fn pause(&self, app: &AppId) -> String {
        self.key("pause", app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str) -> &str {
        let open = k.find('{').unwrap();
        let close = k[open..].find('}').unwrap() + open;
        &k[open + 1..close]
    }

    #[test]
    fn every_key_of_an_app_shares_one_hash_tag_and_starts_with_the_namespace() {
        let keys = Keys::new(Namespace::new("wxpush").unwrap());
        let app = AppId::new("wx1234567890abcdef").unwrap();
        let all = [
            keys.token(&app),
            keys.token_lock(&app),
            keys.token_error(&app),
            keys.token_rejected(&app),
            keys.token_force(&app),
            keys.rate(&app),
            keys.pause(&app),
        ];
        for k in &all {
            assert!(k.starts_with("wxpush:"), "{k}");
            assert_eq!(tag(k), "wx1234567890abcdef", "{k}");
        }
        assert_eq!(all[0], "wxpush:token:{wx1234567890abcdef}");
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
