//! The HTTP client: one keep-alive pool per process, the four WeChat calls, and turning each
//! answer into an [`Outcome`] or an [`AccessToken`] / [`TokenError`].
//!
//! This module owns the wire conversation (URLs, bodies, timeouts, TLS). It must not retry,
//! cache tokens or rate-limit, and must not put a secret or token in any error or log line
//! (every reqwest error goes through `redact::describe`, which strips its URL).

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::Value;
use wxpush_domain::{AppId, Secret};

use crate::config::ClientConfig;
use crate::message::{SubscribeMessage, TemplateMessage};
use crate::outcome::{
    classify_errcode, classify_http_status, classify_transport, classify_unreadable, Outcome,
};
use crate::redact::{describe, may_have_been_sent, scrub};
use crate::token::{classify_token_errcode, AccessToken, TokenError};

const TOKEN_PATH: &str = "/cgi-bin/token";
const STABLE_TOKEN_PATH: &str = "/cgi-bin/stable_token";
const TEMPLATE_SEND_PATH: &str = "/cgi-bin/message/wxopen/template/send";
const SUBSCRIBE_SEND_PATH: &str = "/cgi-bin/message/subscribe/send";

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
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// WeChat's JSON answer, every field optional (success and error answers differ).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    msgid: Option<Value>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
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
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("wxpush/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Http(describe(e, &[])))?;
        Ok(Self { http, base })
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
            .call(self.http.get(url), TOKEN_PATH, &[secret.expose()])
            .await
            .map_err(token_error_from_outcome)?;
        token_from_answer(answer, secret.expose())
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
                json_post(self.http.post(url), &body),
                STABLE_TOKEN_PATH,
                &[secret.expose()],
            )
            .await
            .map_err(token_error_from_outcome)?;
        token_from_answer(answer, secret.expose())
    }

    /// `POST /cgi-bin/message/wxopen/template/send?access_token=..`, spending `msg.form_id`.
    pub async fn send_template(&self, access_token: &str, msg: &TemplateMessage) -> Outcome {
        self.send(TEMPLATE_SEND_PATH, access_token, &msg.body())
            .await
    }

    /// `POST /cgi-bin/message/subscribe/send?access_token=..`, spending one consent.
    /// On `Outcome::Transient { ambiguous: true, .. }` the message may have been delivered:
    /// do not resend it.
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
            .call(json_post(self.http.post(url), body), path, &secrets)
            .await
        {
            Ok(a) => {
                let msgid = a.msgid.as_ref().and_then(msgid_of);
                classify_errcode(a.errcode, &scrub(&a.errmsg, &secrets), msgid)
            }
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

    /// Sends one request and reads WeChat's JSON answer. Transport failures, non-200 statuses
    /// and unreadable answers come back as the `Outcome` the table gives them.
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        path: &'static str,
        secrets: &[&str],
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
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            // The request was answered, so it reached WeChat: outcome unknown.
            Err(e) => return Err(classify_transport(describe(e, secrets), true)),
        };
        serde_json::from_slice::<Answer>(&bytes).map_err(|e| {
            classify_unreadable(format!(
                "unreadable answer ({e}): {}",
                scrub(
                    &String::from_utf8_lossy(&bytes[..bytes.len().min(200)]),
                    secrets
                )
            ))
        })
    }
}

fn json_post(req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body.to_string())
}

fn msgid_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn token_error_from_outcome(o: Outcome) -> TokenError {
    match o {
        Outcome::Transient { code, reason, .. } => TokenError::Transient { code, reason },
        Outcome::Permanent { code, errmsg } => TokenError::Other { code, errmsg },
        other => TokenError::Other {
            code: other.errcode().unwrap_or(-1000),
            errmsg: other.to_string(),
        },
    }
}

fn token_from_answer(a: Answer, secret: &str) -> Result<AccessToken, TokenError> {
    if a.errcode != 0 {
        return Err(classify_token_errcode(
            a.errcode,
            scrub(&a.errmsg, &[secret]),
        ));
    }
    match a.access_token {
        Some(token) if !token.is_empty() => Ok(AccessToken::new(token, a.expires_in.unwrap_or(0))),
        _ => Err(TokenError::Transient {
            code: None,
            reason: "answer has no access_token".to_owned(),
        }),
    }
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
            matches!(
                out,
                Outcome::Transient {
                    code: None,
                    ambiguous: false,
                    ..
                }
            ),
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
