//! The HTTP client: one keep-alive pool per process, the four WeChat calls (and the read of an
//! install's own token service), and turning each answer into an [`Outcome`] or an
//! [`AccessToken`] / [`TokenError`].
//!
//! This module owns the wire conversation (URLs, bodies, timeouts, TLS) and distrusts what
//! comes back: redirects are not followed, at most [`MAX_ANSWER_BYTES`] of an answer are read,
//! and every number in it is read without overflow (`expires_in` bounded to
//! [`MIN_TOKEN_LIFETIME_SECS`]..=[`MAX_TOKEN_LIFETIME_SECS`]). It must not retry, cache tokens
//! or rate-limit, and must not put a secret or token in any error or log line (every reqwest
//! error goes through `redact::describe`, which strips its URL; token answers are never
//! quoted).

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::Value;
use wxpush_domain::{AppId, Secret, ServiceUrl};

use crate::config::ClientConfig;
use crate::message::{SubscribeMessage, TemplateMessage};
use crate::outcome::{
    classify_errcode, classify_http_status, classify_oversized, classify_transport,
    classify_unreadable, Outcome,
};
use crate::redact::{describe, may_have_been_sent, scrub};
use crate::token::{classify_token_errcode, AccessToken, TokenError};

const TOKEN_PATH: &str = "/cgi-bin/token";
const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";
const TEMPLATE_SEND_PATH: &str = "/cgi-bin/message/wxopen/template/send";
const SUBSCRIBE_SEND_PATH: &str = "/cgi-bin/message/subscribe/send";
/// What logs and errors call a token service read (its URL may hold a key).
const SERVICE_PATH: &str = "token service";

/// The most bytes of an answer read. WeChat's answers are under 1 KiB; anything longer is not
/// WeChat's JSON, and is not read into memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The shortest token lifetime believed: a shorter (zero or negative) `expires_in` counts as
/// this. It only keeps the arithmetic meaningful: the fleet refreshes a token at 3/4 of any
/// lifetime; WeChat's tokens live 7200 s (a stable token at least 300 s), and the fake WeChat's
/// tests use tokens of a few seconds.
pub const MIN_TOKEN_LIFETIME_SECS: u64 = 1;
/// The longest token lifetime believed (2 days): a longer `expires_in` (up to
/// `18446744073709551615`) counts as this. WeChat's tokens live 7200 s; the bound keeps every
/// millisecond product far from overflowing and the shared token's Redis key expiring within
/// two days whatever an answer says.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 2 * 24 * 3600;
/// Most characters of an `errmsg` kept.
const MAX_ERRMSG_CHARS: usize = 200;

/// The client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("WeChat API base URL {url:?} is unusable: {reason}")]
    BadBaseUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The WeChat API client. Cheap to clone (clones share the connection pool); build one per
/// process.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    request_timeout: std::time::Duration,
    token_timeout: std::time::Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// WeChat's JSON answer as it came, every field optional (success and error answers differ)
/// and of any JSON type: [`Answer::read`] decides what each is worth.
#[derive(Debug, Default, Deserialize)]
struct RawAnswer {
    #[serde(default)]
    errcode: Option<Value>,
    #[serde(default)]
    errmsg: Option<Value>,
    #[serde(default)]
    msgid: Option<Value>,
    #[serde(default)]
    access_token: Option<Value>,
    #[serde(default)]
    expires_in: Option<Value>,
}

/// WeChat's answer, its numbers read safely.
#[derive(Debug, Default)]
struct Answer {
    errcode: i64,
    /// Whether the answer had an `errcode` at all: WeChat's answer to a send always has one
    /// (`0` when sent); a token's has none when it holds the token.
    has_errcode: bool,
    errmsg: String,
    /// `None` when absent or not a whole number that fits an `i64`.
    msgid: Option<i64>,
    access_token: Option<Value>,
    expires_in: Option<Value>,
}

impl Answer {
    /// An answer whose `errcode` is not a whole number (a float with a fraction, a number past
    /// `i64`, an object) is unreadable: `Err` says why.
    fn read(raw: RawAnswer) -> Result<Self, String> {
        let has_errcode = !matches!(raw.errcode, None | Some(Value::Null));
        let errcode = match &raw.errcode {
            None | Some(Value::Null) => 0,
            Some(v) => whole_number(v).ok_or_else(|| {
                format!(
                    "errcode {} is not a whole number",
                    excerpt(&v.to_string(), 40)
                )
            })?,
        };
        let errmsg = match raw.errmsg {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
        };
        Ok(Self {
            errcode,
            has_errcode,
            errmsg: excerpt(&errmsg, MAX_ERRMSG_CHARS),
            msgid: raw.msgid.as_ref().and_then(whole_number),
            access_token: raw.access_token,
            expires_in: raw.expires_in,
        })
    }
}

/// What kind of answer a call expects: a send's may be quoted (scrubbed) when unreadable; a
/// token's never is, as it may hold the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Send,
    Token,
}

impl Client {
    /// Builds the client and its connection pool.
    pub fn new(config: &ClientConfig) -> Result<Self, BuildError> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let bad = |reason: &str| BuildError::BadBaseUrl {
            url: config.base_url.clone(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(&base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("it must not have a query or fragment"));
        }
        // reqwest is built without a bundled crypto provider; use rustls's `ring` one unless
        // the process already installed another (an `Err` here means one is installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Proxies: reqwest reads HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY (README,
        // "Configuration"). Redirects are not followed: WeChat never redirects, and a 3xx comes
        // from something else (a captive portal, a wrong base URL) that must not receive the
        // request, its token or its secret again.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("wxpush/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Http(describe(e, &[])))?;
        Ok(Self {
            http,
            base,
            request_timeout: config.request_timeout,
            token_timeout: config.token_timeout,
        })
    }

    /// The longest a call takes, its answer read (the request timeout).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.request_timeout
    }

    /// The base URL calls go to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /cgi-bin/token?grant_type=client_credential&appid=..&secret=..`. Each successful call
    /// makes WeChat replace the app's token (the previous one works 5 more minutes).
    pub async fn fetch_token(
        &self,
        app_id: &AppId,
        secret: &Secret,
    ) -> Result<AccessToken, TokenError> {
        let url = self.url(
            TOKEN_PATH,
            &[
                ("grant_type", "client_credential"),
                ("appid", app_id.as_str()),
                ("secret", secret.expose()),
            ],
        )?;
        let answer = self
            .call(
                self.http.get(url).timeout(self.token_timeout),
                TOKEN_PATH,
                &[secret.expose()],
                Expect::Token,
            )
            .await
            .map_err(token_error_from_outcome)?;
        token_from_answer(answer, TOKEN_PATH, &[secret.expose()])
    }

    /// `POST /cgi-bin/stable_token`: WeChat answers the same token while it is valid, so
    /// concurrent callers do not invalidate each other. `force_refresh: true` is limited by
    /// WeChat to 20 a day, 30 s apart.
    pub async fn fetch_stable_token(
        &self,
        app_id: &AppId,
        secret: &Secret,
        force_refresh: bool,
    ) -> Result<AccessToken, TokenError> {
        let url = self.url(STABLE_TOKEN_PATH, &[])?;
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": app_id.as_str(),
            "secret": secret.expose(),
            "force_refresh": force_refresh,
        });
        let answer = self
            .call(
                json_post(self.http.post(url).timeout(self.token_timeout), &body),
                STABLE_TOKEN_PATH,
                &[secret.expose()],
                Expect::Token,
            )
            .await
            .map_err(token_error_from_outcome)?;
        token_from_answer(answer, STABLE_TOKEN_PATH, &[secret.expose()])
    }

    /// `GET` the install's own token service (contract §8.6), which answers
    /// `{"access_token": "...", "expires_in": seconds}` as WeChat does (an `errcode` it relays
    /// is read with WeChat's token table). The token timeout, and the same size bound and no
    /// redirects as the WeChat calls; the URL's password and query never reach an error.
    pub async fn fetch_service_token(&self, url: &ServiceUrl) -> Result<AccessToken, TokenError> {
        let secrets = url.secret_parts();
        let parsed = reqwest::Url::parse(url.expose()).map_err(|e| TokenError::Other {
            code: -1000,
            errmsg: format!("bad token service URL {url}: {e}"),
        })?;
        let answer = self
            .call(
                self.http.get(parsed).timeout(self.token_timeout),
                SERVICE_PATH,
                &secrets,
                Expect::Token,
            )
            .await
            .map_err(token_error_from_outcome)?;
        token_from_answer(answer, SERVICE_PATH, &secrets)
    }

    /// `POST /cgi-bin/message/wxopen/template/send?access_token=..`, spending `msg.form_id`.
    pub async fn send_template(&self, access_token: &str, msg: &TemplateMessage) -> Outcome {
        self.send(TEMPLATE_SEND_PATH, access_token, &msg.body())
            .await
    }

    /// `POST /cgi-bin/message/subscribe/send?access_token=..`, spending one consent.
    /// On `Outcome::Unknown` the message may have been delivered: do not resend it.
    pub async fn send_subscribe(&self, access_token: &str, msg: &SubscribeMessage) -> Outcome {
        self.send(SUBSCRIBE_SEND_PATH, access_token, &msg.body())
            .await
    }

    async fn send(&self, path: &'static str, access_token: &str, body: &Value) -> Outcome {
        let url = match self.url(path, &[("access_token", access_token)]) {
            Ok(u) => u,
            Err(e) => {
                return Outcome::Permanent {
                    code: -1000,
                    errmsg: e.to_string(),
                }
            }
        };
        let secrets = [access_token];
        let outcome = match self
            .call(
                json_post(self.http.post(url), body),
                path,
                &secrets,
                Expect::Send,
            )
            .await
        {
            // A 200 whose JSON has no errcode did not come from WeChat's send API (a portal,
            // a firewall, a gateway's own JSON): not a proof of delivery, nor of its absence.
            Ok(a) if !a.has_errcode => classify_unreadable("a 200 answer without errcode".into()),
            Ok(a) => classify_errcode(a.errcode, &scrub(&a.errmsg, &secrets), a.msgid),
            Err(o) => o,
        };
        tracing::debug!(path, errcode = ?outcome.errcode(), "wechat send");
        outcome
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, TokenError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            TokenError::Other {
                code: -1000,
                errmsg: format!("bad URL: {e}"),
            }
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one request and reads WeChat's JSON answer (at most [`MAX_ANSWER_BYTES`]).
    /// Transport failures, non-200 statuses (a redirect included: it is not followed),
    /// oversized and unreadable answers come back as the `Outcome` the table gives them.
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        path: &'static str,
        secrets: &[&str],
        expect: Expect,
    ) -> Result<Answer, Outcome> {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let sent = may_have_been_sent(&e);
                let reason = describe(e, secrets);
                tracing::debug!(path, %reason, sent, "wechat call failed");
                return Err(classify_transport(reason, sent));
            }
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(classify_http_status(status));
        }
        let bytes = match read_bounded(resp, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(Unread::TooLarge) => {
                tracing::debug!(path, limit = MAX_ANSWER_BYTES, "wechat answer too large");
                return Err(classify_oversized(MAX_ANSWER_BYTES));
            }
            // The request was answered, so it reached WeChat: outcome unknown.
            Err(Unread::Failed(e)) => return Err(classify_transport(describe(e, secrets), true)),
        };
        let unreadable = |why: String| {
            classify_unreadable(match expect {
                Expect::Send => format!(
                    "unreadable answer ({why}): {}",
                    scrub(&excerpt(&String::from_utf8_lossy(&bytes), 200), secrets)
                ),
                Expect::Token => format!("unreadable answer ({why})"),
            })
        };
        let raw =
            serde_json::from_slice::<RawAnswer>(&bytes).map_err(|e| unreadable(e.to_string()))?;
        Answer::read(raw).map_err(unreadable)
    }
}

/// Why an answer's body was not read.
enum Unread {
    /// Longer than the limit (by its `Content-Length`, or once that much arrived).
    TooLarge,
    Failed(reqwest::Error),
}

/// Reads at most `limit` bytes of `resp`'s body, chunk by chunk: a longer one is abandoned as
/// soon as it is known to be longer, never held whole.
async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, Unread> {
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(Unread::TooLarge);
    }
    let mut body = Vec::with_capacity(announced.map_or(1024, |n| n as usize));
    while let Some(chunk) = resp.chunk().await.map_err(Unread::Failed)? {
        if body.len() + chunk.len() > limit {
            return Err(Unread::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON value as a whole `i64`: an integer that fits, an integral float that fits, or a
/// string holding one. Anything else (a fraction, a number past `i64`, another type) is `None`.
fn whole_number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63))
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `expires_in` as whole seconds within [`MIN_TOKEN_LIFETIME_SECS`]..=
/// [`MAX_TOKEN_LIFETIME_SECS`], and whether it had to be bounded. A number of any size or sign
/// (or a string holding one) is read; a fraction is dropped. `None`: not a number at all.
fn bounded_lifetime(v: &Value) -> Option<(u64, bool)> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !secs.is_finite() {
        return None;
    }
    let (min, max) = (
        MIN_TOKEN_LIFETIME_SECS as f64,
        MAX_TOKEN_LIFETIME_SECS as f64,
    );
    let secs = secs.floor();
    // Both bounds are exact in an f64, so the cast back is exact too.
    Some((secs.clamp(min, max) as u64, !(min..=max).contains(&secs)))
}

/// The first `n` characters of `s`, marked when cut.
fn excerpt(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn json_post(req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body.to_string())
}

fn token_error_from_outcome(o: Outcome) -> TokenError {
    match o {
        Outcome::Transient { code, reason } => TokenError::Transient { code, reason },
        // A token fetch changes nothing at WeChat that matters here: try again.
        Outcome::Unknown { reason } => TokenError::Transient { code: None, reason },
        Outcome::Permanent { code, errmsg } => TokenError::Other { code, errmsg },
        other => TokenError::Other {
            code: other.errcode().unwrap_or(-1000),
            errmsg: other.to_string(),
        },
    }
}

/// A token answer (`from`: the endpoint, for errors and the warning) to a token, its lifetime
/// bounded, or to the error its errcode means. `secrets` are scrubbed from the errmsg.
fn token_from_answer(
    a: Answer,
    from: &'static str,
    secrets: &[&str],
) -> Result<AccessToken, TokenError> {
    if a.errcode != 0 {
        return Err(classify_token_errcode(a.errcode, scrub(&a.errmsg, secrets)));
    }
    let missing = |what: &str| TokenError::Transient {
        code: None,
        reason: format!("{from} answer has no {what}"),
    };
    let token = match a.access_token {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err(missing("access_token")),
    };
    let raw = a.expires_in.ok_or_else(|| missing("expires_in"))?;
    let (secs, bounded) = bounded_lifetime(&raw).ok_or_else(|| missing("numeric expires_in"))?;
    if bounded {
        tracing::warn!(
            endpoint = from,
            expires_in = %excerpt(&raw.to_string(), 40),
            used = secs,
            "token lifetime outside {MIN_TOKEN_LIFETIME_SECS}..={MAX_TOKEN_LIFETIME_SECS} s; using the bound"
        );
    }
    Ok(AccessToken::new(token, secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wxpush_domain::OpenId;

    const SECRET: &str = "S3CRET-closed-port-0123456789abcdef";
    const TOKEN: &str = "TOKEN-closed-port-ffffeeee";

    async fn closed_port_client() -> Client {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let mut cfg = ClientConfig::with_base_url(format!("http://127.0.0.1:{port}"));
        cfg.connect_timeout = Duration::from_millis(500);
        Client::new(&cfg).expect("client")
    }

    fn assert_clean(text: &str) {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains("secret="), "secret query leaked: {text}");
        assert!(
            !text.contains("access_token="),
            "token query leaked: {text}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_transient_not_ambiguous_and_leaks_nothing() {
        let client = closed_port_client().await;
        let app = AppId::new("wx1234567890abcdef").expect("appid");
        let secret = Secret::new(SECRET);

        for err in [
            client.fetch_token(&app, &secret).await,
            client.fetch_stable_token(&app, &secret, true).await,
        ] {
            let err = err.expect_err("closed port must fail");
            assert!(err.is_transient(), "{err:?}");
            assert_clean(&err.to_string());
            assert_clean(&format!("{err:?}"));
        }

        let msg = TemplateMessage {
            touser: OpenId::new("oUser1").expect("openid"),
            template_id: "TPL".into(),
            page: None,
            form_id: "f".into(),
            data: Default::default(),
            emphasis_keyword: None,
        };
        let out = client.send_template(TOKEN, &msg).await;
        assert!(
            matches!(out, Outcome::Transient { code: None, .. }),
            "{out:?}"
        );
        assert_clean(&out.to_string());
        assert_clean(&format!("{out:?}"));
    }

    #[test]
    fn rejects_bad_base_urls() {
        for bad in ["ftp://x", "not a url", "http://h/?q=1"] {
            assert!(
                Client::new(&ClientConfig::with_base_url(bad)).is_err(),
                "{bad}"
            );
        }
        let c = Client::new(&ClientConfig::with_base_url("http://127.0.0.1:1/")).expect("ok");
        assert_eq!(c.base_url(), "http://127.0.0.1:1");
    }

    #[test]
    fn https_client_builds_with_ring() {
        assert!(Client::new(&ClientConfig::default()).is_ok());
    }
}
