//! Who may act through the dashboard (issue 16, contract 8.7): the operator's token, the
//! sessions it opens, and the CSRF token each session's forms carry.
//!
//! Without `WXPUSH_DASHBOARD_TOKEN` the dashboard is read-only: every action is refused. With
//! it, an action is a POST that carries either the token itself (`Authorization: Bearer`, for
//! scripts: no cookie, so nothing a browser could be tricked into sending) or a session cookie
//! (`wxpush_dashboard`, HttpOnly, SameSite=Strict, opened by typing the token once into the
//! login form) together with that session's CSRF token (a hidden form field, or the
//! `X-CSRF-Token` header). Every comparison of a secret is constant-time. Sessions live in this
//! process's memory for [`SESSION_TTL`]: a restart logs everyone out.
//!
//! This module must not log or render the token, a session id or a CSRF token anywhere but in
//! the cookie and the operator's own forms.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "wxpush_dashboard";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest token accepted (a token is typed once, then lives in a cookie).
pub const MIN_TOKEN_LEN: usize = 16;

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the dashboard is read-only: WXPUSH_DASHBOARD_TOKEN is not set")]
    ReadOnly,
    #[error("log in with the dashboard's token first")]
    NotLoggedIn,
    #[error("the form's CSRF token is missing or wrong: reload the page and try again")]
    Csrf,
    #[error("the request comes from another site")]
    CrossSite,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    until: Instant,
}

/// The token (if any) and the open sessions.
pub struct Auth {
    token: Option<String>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// What a request carries: a session (with its CSRF token) or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The session's CSRF token, for the forms of the page (`None`: not logged in).
    pub csrf: Option<String>,
    /// No token is configured: nobody can act.
    pub read_only: bool,
}

impl Auth {
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn read_only(&self) -> bool {
        self.token.is_none()
    }

    /// Whether `given` is the token (constant-time; `false` when none is configured).
    pub fn token_matches(&self, given: &str) -> bool {
        match &self.token {
            Some(t) => bool::from(t.as_bytes().ct_eq(given.as_bytes())),
            None => false,
        }
    }

    /// Opens a session for a correct token: (session id, its CSRF token).
    pub fn login(&self, given: &str) -> Result<String, Refused> {
        if self.read_only() {
            return Err(Refused::ReadOnly);
        }
        if !self.token_matches(given) {
            return Err(Refused::NotLoggedIn);
        }
        let id = random_hex();
        let session = Session {
            csrf: random_hex(),
            until: Instant::now() + SESSION_TTL,
        };
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.lock().remove(&id);
        }
    }

    /// Who the request is.
    pub fn who(&self, headers: &HeaderMap) -> Who {
        Who {
            csrf: self.session(headers).map(|s| s.csrf),
            read_only: self.read_only(),
        }
    }

    /// Whether the request may act: a bearer token, or a session cookie with its CSRF token
    /// (`csrf`: the form's field or the `X-CSRF-Token` header) from this site.
    pub fn may_act(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), Refused> {
        if self.read_only() {
            return Err(Refused::ReadOnly);
        }
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return if self.token_matches(bearer.trim()) {
                Ok(())
            } else {
                Err(Refused::NotLoggedIn)
            };
        }
        if cross_site(headers) {
            return Err(Refused::CrossSite);
        }
        let session = self.session(headers).ok_or(Refused::NotLoggedIn)?;
        let given = csrf
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .ok_or(Refused::Csrf)?;
        if bool::from(session.csrf.as_bytes().ct_eq(given.as_bytes())) {
            Ok(())
        } else {
            Err(Refused::Csrf)
        }
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let sessions = self.lock();
        // Looked up by a hash map (not constant-time): the id is 128 random bits, so timing
        // tells an attacker nothing they could build on.
        let s = sessions.get(&id)?;
        (s.until > Instant::now()).then(|| s.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn expired_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session id the request's cookie names.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// A browser says the request comes from another site (`Sec-Fetch-Site`), or its `Origin`
/// is not the `Host` it was sent to. (SameSite=Strict already keeps the cookie off such
/// requests; this refuses them even where a browser does not.)
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    // A browser that says where a request comes from is believed (some send `Origin: null`
    // with a same-origin form); one that does not is judged by `Origin`.
    if let Some(site) = text("sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    match (text("origin"), text("host")) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let origin = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or(origin);
            origin != host
        }
        _ => false,
    }
}

/// 128 random bits as hex, from the operating system.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator does not fail on the systems wxpush runs on; if it ever did, the
    // process has no safe way to make a session, so it stops rather than make a weak one.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random generator failed: {e}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}")).unwrap(),
        );
        h
    }

    #[test]
    fn without_a_token_nothing_may_act() {
        let a = Auth::new(None);
        assert_eq!(a.login("anything-at-all-1234"), Err(Refused::ReadOnly));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(a.may_act(&h, Some("x")), Err(Refused::ReadOnly));
    }

    #[test]
    fn a_session_acts_only_with_its_csrf_token() {
        let a = Auth::new(Some("correct-horse-battery".into()));
        assert_eq!(a.login("wrong-horse-battery!!"), Err(Refused::NotLoggedIn));
        let id = a.login("correct-horse-battery").unwrap();
        let h = with_cookie(&id);
        let csrf = a.who(&h).csrf.unwrap();
        assert_eq!(a.may_act(&h, None), Err(Refused::Csrf));
        assert_eq!(a.may_act(&h, Some("nope")), Err(Refused::Csrf));
        assert_eq!(a.may_act(&h, Some(&csrf)), Ok(()));
        assert_eq!(
            a.may_act(&with_cookie("forged"), Some(&csrf)),
            Err(Refused::NotLoggedIn)
        );
        let mut cross = h.clone();
        cross.insert("origin", HeaderValue::from_static("http://evil.example"));
        cross.insert("host", HeaderValue::from_static("127.0.0.1:8088"));
        assert_eq!(a.may_act(&cross, Some(&csrf)), Err(Refused::CrossSite));
        a.logout(&h);
        assert_eq!(a.may_act(&h, Some(&csrf)), Err(Refused::NotLoggedIn));
    }

    #[test]
    fn a_bearer_token_acts_without_a_session() {
        let a = Auth::new(Some("correct-horse-battery".into()));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer correct-horse-battery"),
        );
        assert_eq!(a.may_act(&h, None), Ok(()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer correct-horse-batterY"),
        );
        assert_eq!(a.may_act(&h, None), Err(Refused::NotLoggedIn));
    }
}
