//! The events role (`wxpush events`, contract §8.4): the URL configured as each mini
//! program's message push server, `/wechat/<appid>`, so that consents and delivery results
//! reach the bank from WeChat itself.
//!
//! Per request, in this order, each refusal counted (`wxpush_event_requests_total` by
//! `result`) and never stored:
//! 1. the app: one of the configured apps with a `push_token`, else 404;
//! 2. `signature`, `timestamp` and `nonce` present (400), the timestamp within
//!    [`TIMESTAMP_WINDOW_SECS`] of this server's clock (403), the signature right (403),
//!    compared in constant time (`wxpush_wechat::push_crypto`);
//! 3. `GET`: the server check, `echostr` echoed. `POST`: the body at most [`BODY_LIMIT`]
//!    bytes (413), JSON or XML by `Content-Type` or its first byte; in secure mode
//!    (`encrypt_type=aes`) `msg_signature` over the token, timestamp, nonce and `Encrypt`
//!    (403), then opened with the app's EncodingAESKey, whose plaintext must name the app
//!    (403). An app with an EncodingAESKey takes sealed pushes only (403): a plain body is
//!    covered by no signature;
//! 4. the nonce remembered in Redis (`SET NX EX`, [`wxpush_bank::PUSH_NONCE_TTL_SECS`]): seen
//!    already, the request is a replay (409);
//! 5. the event applied (`apply`) and only then `success` answered. A popup's accepts add
//!    consents when the app's `consent_source` is `events` (else they are counted and
//!    ignored); a change's rejects clear the user's consents for the template under either
//!    setting; a sent event goes to [`SentEvents`] (receipts: `crate::receipts::ReceiptSentEvents`). Each
//!    change is made by one bank script that also marks the event (sender, `CreateTime`,
//!    type), so a push WeChat retries, with a new nonce or not, changes nothing, and a crash
//!    cannot leave a change without its mark ([`wxpush_bank::events`]).
//!
//! Redis not answering (or the work not done within [`ANSWER_WITHIN`]) is a 503 (the nonce
//! given back), so WeChat retries. This module must not parse push bodies or do
//! cryptography itself (`wxpush_wechat::push_event`, `push_crypto`), nor know the bank's keys.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::future::BoxFuture;
use wxpush_bank::{Bank, BankError, EventApplied};
use wxpush_domain::{AppConfig, AppId, Config, ConsentSource, OpenId};
use wxpush_wechat::push_crypto::{signature, signatures_match, PushCipher};
use wxpush_wechat::push_event::{self, Consent, Delivery, PushEvent, PushEventKind};

use crate::metrics as m;
use crate::{Health, Shutdown};

/// Largest push body read: 64 KiB (WeChat's events are well under 1 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How far a request's `timestamp` may be from this server's clock: 5 minutes either way.
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// The answer is given within this (WeChat waits 5 s, then retries).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(4000);

/// The role's name in `/readyz` and the metrics.
pub const ROLE: &str = "events";

/// Why the events role cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("no configured app has a push_token (WXPUSH_PUSH_TOKEN, or push_token in WXPUSH_CONFIG): `wxpush events` would serve nothing")]
    NoApp,
    #[error("app {app}: encoding_aes_key: {reason}")]
    BadKey { app: AppId, reason: String },
    #[error("cannot listen on {addr} (WXPUSH_EVENTS_ADDR): {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// One app the role serves.
struct EventApp {
    config: AppConfig,
    cipher: Option<PushCipher>,
}

/// What the role serves: the apps with a `push_token`, and where.
pub struct EventsSettings {
    apps: HashMap<AppId, EventApp>,
    pub addr: SocketAddr,
}

impl std::fmt::Debug for EventsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.apps.keys().map(AppId::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("EventsSettings")
            .field("apps", &ids)
            .field("addr", &self.addr)
            .finish()
    }
}

impl EventsSettings {
    /// The apps of `config` that have a `push_token`, each EncodingAESKey checked. An install
    /// with none is an error (see [`EventsSettings::any`] to ask first).
    pub fn from_config(config: &Config) -> Result<Self, EventsError> {
        let mut apps = HashMap::new();
        for app in config.apps.iter().filter(|a| a.push_token.is_some()) {
            let cipher = app
                .encoding_aes_key
                .as_ref()
                .map(|k| PushCipher::new(k.expose()))
                .transpose()
                .map_err(|e| EventsError::BadKey {
                    app: app.id.clone(),
                    reason: e.to_string(),
                })?;
            apps.insert(
                app.id.clone(),
                EventApp {
                    config: app.clone(),
                    cipher,
                },
            );
        }
        if apps.is_empty() {
            return Err(EventsError::NoApp);
        }
        Ok(Self {
            apps,
            addr: config.events_addr,
        })
    }

    /// Whether any app of `config` has a `push_token` (`wxpush all` runs the role then).
    pub fn any(config: &Config) -> bool {
        config.apps.iter().any(|a| a.push_token.is_some())
    }
}

/// Where `subscribe_msg_sent_event`s go: the seam for `delivered` / `delivery_failed`
/// receipts (contract §8.3), matched by `MsgID`. The role answers WeChat only after
/// [`SentEvents::delivered`] returns `Ok`, and answers 503 (WeChat retries) on `Err`; a
/// retried push may call it again with the same delivery, so it must be idempotent (receipts
/// are at least once, keyed by outcome).
pub trait SentEvents: Send + Sync {
    fn delivered<'a>(
        &'a self,
        app: &'a AppId,
        open_id: &'a OpenId,
        create_time: i64,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BankError>>;
}

/// Each sent event counted and logged at debug, nothing stored (for tests and tools without
/// receipts; `wxpush events` uses [`crate::receipts::ReceiptSentEvents`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountSentEvents;

impl SentEvents for CountSentEvents {
    fn delivered<'a>(
        &'a self,
        app: &'a AppId,
        _open_id: &'a OpenId,
        _create_time: i64,
        delivery: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BankError>> {
        let outcome = if delivery.error_code == 0 {
            "delivered"
        } else {
            "delivery_failed"
        };
        metrics::counter!(m::EVENT_DELIVERIES, "outcome" => outcome).increment(1);
        tracing::debug!(
            app = %app,
            msg_id = %delivery.msg_id,
            error_code = delivery.error_code,
            outcome,
            "subscribe message delivery reported by WeChat"
        );
        Box::pin(async { Ok(()) })
    }
}

#[derive(Clone)]
struct Served {
    bank: Bank,
    settings: Arc<EventsSettings>,
    sent: Arc<dyn SentEvents>,
}

/// The role's routes (`GET`/`POST /wechat/{appid}`), for [`run`] and tests in this process.
pub fn router(bank: Bank, settings: Arc<EventsSettings>, sent: Arc<dyn SentEvents>) -> Router {
    Router::new()
        .route("/wechat/{appid}", get(handle).post(handle))
        .fallback(|| async {
            count(Refused::NotFound);
            StatusCode::NOT_FOUND
        })
        .with_state(Served {
            bank,
            settings,
            sent,
        })
}

/// Serves the role on `settings.addr` until `shutdown` fires. Returns the address bound once
/// it listens (port 0 picks one), the server running in a task of its own.
pub async fn run(
    bank: Bank,
    settings: EventsSettings,
    sent: Arc<dyn SentEvents>,
    health: &Health,
    mut shutdown: Shutdown,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), EventsError> {
    health.register(ROLE);
    let addr = settings.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| EventsError::Listen {
            addr,
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| EventsError::Listen {
        addr,
        reason: e.to_string(),
    })?;
    let mut ids: Vec<&str> = settings.apps.keys().map(AppId::as_str).collect();
    ids.sort_unstable();
    tracing::info!(
        addr = %bound,
        apps = %ids.join(", "),
        "serving WeChat's message push on http://{bound}/wechat/<appid>"
    );
    let app = router(bank, Arc::new(settings), sent);
    health.set_consuming(ROLE, true);
    let health = health.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        health.set_consuming(ROLE, false);
        if let Err(e) = served {
            tracing::warn!(error = %e, "the message push endpoint stopped");
        }
    });
    Ok((bound, task))
}

/// Why a request was refused (the `result` label), and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NotFound,
    MissingSignature,
    StaleTimestamp,
    BadSignature,
    TooLarge,
    SecureModeOff,
    BadEnvelope,
    OtherApp,
    Replayed,
    BadBody,
    PlainWithKey,
    Unavailable,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::NotFound => "unknown_app",
            Refused::MissingSignature => "missing_signature",
            Refused::StaleTimestamp => "stale_timestamp",
            Refused::BadSignature => "bad_signature",
            Refused::TooLarge => "too_large",
            Refused::SecureModeOff => "secure_mode_not_configured",
            Refused::BadEnvelope => "bad_envelope",
            Refused::OtherApp => "other_app",
            Refused::Replayed => "replayed_nonce",
            Refused::BadBody => "bad_body",
            Refused::PlainWithKey => "plain_with_key",
            Refused::Unavailable => "unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refused::NotFound => StatusCode::NOT_FOUND,
            Refused::MissingSignature | Refused::BadEnvelope | Refused::BadBody => {
                StatusCode::BAD_REQUEST
            }
            Refused::StaleTimestamp
            | Refused::BadSignature
            | Refused::OtherApp
            | Refused::PlainWithKey => StatusCode::FORBIDDEN,
            Refused::SecureModeOff => StatusCode::BAD_REQUEST,
            Refused::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::Replayed => StatusCode::CONFLICT,
            Refused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn count(r: Refused) {
    metrics::counter!(m::EVENT_REQUESTS, "result" => r.label()).increment(1);
}

fn refuse(r: Refused) -> Response {
    count(r);
    (r.status(), r.label()).into_response()
}

fn success() -> Response {
    metrics::counter!(m::EVENT_REQUESTS, "result" => "ok").increment(1);
    ([(header::CONTENT_TYPE, "text/plain")], "success").into_response()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The signed query parameters, checked: the timestamp within the window and the signature
/// right. Returns the timestamp and nonce.
fn check_signature<'q>(
    query: &'q HashMap<String, String>,
    token: &str,
) -> Result<(&'q str, &'q str), Refused> {
    let (Some(sig), Some(timestamp), Some(nonce)) = (
        query.get("signature"),
        query.get("timestamp"),
        query.get("nonce"),
    ) else {
        return Err(Refused::MissingSignature);
    };
    if nonce.is_empty() || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refused::MissingSignature);
    }
    let at: i64 = timestamp.parse().map_err(|_| Refused::StaleTimestamp)?;
    if now_secs().saturating_sub(at).saturating_abs() > TIMESTAMP_WINDOW_SECS {
        return Err(Refused::StaleTimestamp);
    }
    if !signatures_match(sig, &signature(&[token, timestamp, nonce])) {
        return Err(Refused::BadSignature);
    }
    Ok((timestamp, nonce))
}

fn is_xml(headers: &HeaderMap, body: &[u8]) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("xml") {
        return true;
    }
    if ct.contains("json") {
        return false;
    }
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

fn parse(body: &[u8], xml: bool) -> Result<PushEvent, Refused> {
    let parsed = if xml {
        push_event::parse_xml(body)
    } else {
        push_event::parse_json(body)
    };
    parsed.map_err(|e| {
        tracing::debug!(error = %e, "a signed push body could not be read");
        Refused::BadBody
    })
}

async fn handle(
    State(served): State<Served>,
    Path(appid): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(app) = AppId::new(&appid)
        .ok()
        .and_then(|id| served.settings.apps.get(&id))
    else {
        return refuse(Refused::NotFound);
    };
    let Some(token) = app.config.push_token.as_ref() else {
        return refuse(Refused::NotFound);
    };
    // A query that does not even decode carries no signature.
    let Ok(Query(query)) = query else {
        return refuse(Refused::MissingSignature);
    };
    let (timestamp, nonce) = match check_signature(&query, token.expose()) {
        Ok(t) => t,
        Err(r) => return refuse(r),
    };
    if method == Method::GET {
        // The server check: echo `echostr`, signed as every request.
        let Some(echo) = query.get("echostr") else {
            return refuse(Refused::MissingSignature);
        };
        metrics::counter!(m::EVENT_REQUESTS, "result" => "server_check").increment(1);
        return ([(header::CONTENT_TYPE, "text/plain")], echo.clone()).into_response();
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT) {
        return refuse(Refused::TooLarge);
    }
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        // Without a length (chunked), only going past the limit fails; with one, the body
        // broke off.
        Err(_) if declared.is_none() => return refuse(Refused::TooLarge),
        Err(_) => return refuse(Refused::BadBody),
    };
    let xml = is_xml(&headers, &body);
    let sealed = query.get("encrypt_type").map(String::as_str) == Some("aes");
    if !sealed && app.cipher.is_some() {
        // With an EncodingAESKey, WeChat seals every push (secure or compatible mode): a
        // plain one, whose body no signature covers, is not WeChat's.
        return refuse(Refused::PlainWithKey);
    }
    let event = if sealed {
        let Some(cipher) = app.cipher.as_ref() else {
            return refuse(Refused::SecureModeOff);
        };
        let Some(msg_sig) = query.get("msg_signature") else {
            return refuse(Refused::MissingSignature);
        };
        let envelope = match push_event::envelope(&body, xml) {
            Ok(e) => e,
            Err(_) => return refuse(Refused::BadEnvelope),
        };
        let expected = signature(&[token.expose(), timestamp, nonce, &envelope.encrypt]);
        if !signatures_match(msg_sig, &expected) {
            return refuse(Refused::BadSignature);
        }
        let plain = match cipher.open(&envelope.encrypt, app.config.id.as_str()) {
            Ok(p) => p,
            Err(wxpush_wechat::push_crypto::PushCryptoError::OtherApp) => {
                return refuse(Refused::OtherApp)
            }
            Err(_) => return refuse(Refused::BadEnvelope),
        };
        let inner_xml = plain.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
        parse(&plain, inner_xml)
    } else {
        parse(&body, xml)
    };
    // Signed: from here on the nonce is spent, whatever the body holds. Everything that
    // talks to Redis is bounded by ANSWER_WITHIN as a whole (WeChat waits 5 s).
    let bank = &served.bank;
    let work = async {
        match bank.remember_push_nonce(&app.config.id, nonce).await {
            Ok(true) => {}
            Ok(false) => return Err(ApplyError::Replayed),
            Err(e) => return Err(ApplyError::Bank(e)),
        }
        let event = event.map_err(|_| ApplyError::BadBody)?;
        apply(&served, &app.config, &event).await
    };
    let failed = match tokio::time::timeout(ANSWER_WITHIN, work).await {
        Ok(Ok(())) => return success(),
        Ok(Err(ApplyError::Replayed)) => return refuse(Refused::Replayed),
        Ok(Err(ApplyError::BadBody)) => return refuse(Refused::BadBody),
        Ok(Err(ApplyError::Bank(e))) => e.to_string(),
        Err(_) => format!("not done within {} ms", ANSWER_WITHIN.as_millis()),
    };
    tracing::warn!(
        error = %failed,
        "a push could not be stored: refused with 503 for WeChat to retry"
    );
    // WeChat's retry may come with the same nonce: it must not be taken for a replay. In the
    // background, so that the answer is not held up by a Redis that does not answer.
    let (bank, id, nonce) = (bank.clone(), app.config.id.clone(), nonce.to_owned());
    tokio::spawn(async move {
        let forget = bank.forget_push_nonce(&id, &nonce);
        let _ = tokio::time::timeout(Duration::from_secs(10), forget).await;
    });
    refuse(Refused::Unavailable)
}

#[derive(Debug)]
enum ApplyError {
    /// The nonce was seen already.
    Replayed,
    /// The body (or its sender, not a valid openId) cannot be read.
    BadBody,
    Bank(BankError),
}

impl From<BankError> for ApplyError {
    fn from(e: BankError) -> Self {
        ApplyError::Bank(e)
    }
}

fn count_event(event: &'static str, result: &'static str) {
    metrics::counter!(m::EVENTS, "event" => event, "result" => result).increment(1);
}

fn count_applied(event: &'static str, applied: EventApplied) {
    let result = match applied {
        EventApplied::Applied { .. } => "applied",
        EventApplied::Repeated => "repeated",
    };
    count_event(event, result);
}

/// What one signed event does to the bank (see the module's docs). `Ok` once it is stored.
async fn apply(served: &Served, app: &AppConfig, event: &PushEvent) -> Result<(), ApplyError> {
    let user = || OpenId::new(&event.open_id).map_err(|_| ApplyError::BadBody);
    match &event.kind {
        PushEventKind::Popup(items) => {
            if app.consent_source != ConsentSource::Events {
                // The client's uploads carry this tap's consents (contract §8.4).
                count_event("popup", "ignored_consent_source");
                return Ok(());
            }
            let open_id = user()?;
            let consents = accepted(app, items);
            let key = format!("{}:popup", event.create_time);
            let applied = served
                .bank
                .event_add_consents(&app.id, &open_id, &key, &consents)
                .await?;
            count_applied("popup", applied);
        }
        PushEventKind::Change(items) => {
            let open_id = user()?;
            let key = format!("{}:change", event.create_time);
            for item in items.iter().filter(|c| !c.accepted) {
                let applied = served
                    .bank
                    .event_clear_consents(&app.id, &open_id, &key, &item.template_id)
                    .await?;
                count_applied("change", applied);
            }
        }
        PushEventKind::Sent(items) => {
            let open_id = user()?;
            for delivery in items {
                served
                    .sent
                    .delivered(&app.id, &open_id, event.create_time, delivery)
                    .await?;
            }
            count_event("sent", "counted");
        }
        PushEventKind::Other(kind) => {
            tracing::debug!(kind = %kind, "a push of another kind: answered, nothing done");
            count_event("other", "ignored");
        }
    }
    Ok(())
}

/// A popup's accepted templates that the app keeps (its `templates`, and a valid id), each
/// counted once per item; the rest counted and dropped.
fn accepted<'a>(app: &AppConfig, items: &'a [Consent]) -> BTreeMap<&'a str, u64> {
    let mut out = BTreeMap::new();
    for item in items.iter().filter(|c| c.accepted) {
        if wxpush_domain::check_template_id(&item.template_id).is_err()
            || !app.accepts_template(&item.template_id)
        {
            count_event("popup", "unknown_template");
            continue;
        }
        *out.entry(item.template_id.as_str()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_request_is_signed_fresh_and_complete_or_refused() {
        let now = now_secs().to_string();
        let good = signature(&["tok3n", &now, "n1"]);
        assert_eq!(
            check_signature(
                &q(&[("signature", &good), ("timestamp", &now), ("nonce", "n1")]),
                "tok3n"
            ),
            Ok((now.as_str(), "n1"))
        );
        let upper = good.to_ascii_uppercase();
        assert!(check_signature(
            &q(&[("signature", &upper), ("timestamp", &now), ("nonce", "n1")]),
            "tok3n"
        )
        .is_ok());
        assert_eq!(
            check_signature(
                &q(&[("signature", &good), ("timestamp", &now), ("nonce", "n2")]),
                "tok3n"
            ),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check_signature(&q(&[("timestamp", &now), ("nonce", "n1")]), "tok3n"),
            Err(Refused::MissingSignature)
        );
        let old = (now_secs() - TIMESTAMP_WINDOW_SECS - 5).to_string();
        let signed_old = signature(&["tok3n", &old, "n1"]);
        assert_eq!(
            check_signature(
                &q(&[
                    ("signature", &signed_old),
                    ("timestamp", &old),
                    ("nonce", "n1")
                ]),
                "tok3n"
            ),
            Err(Refused::StaleTimestamp)
        );
        assert_eq!(
            check_signature(
                &q(&[("signature", &good), ("timestamp", "soon"), ("nonce", "n1")]),
                "tok3n"
            ),
            Err(Refused::StaleTimestamp)
        );
        for extreme in [i64::MIN, i64::MAX] {
            let t = extreme.to_string();
            let sig = signature(&["tok3n", &t, "n1"]);
            assert_eq!(
                check_signature(
                    &q(&[("signature", &sig), ("timestamp", &t), ("nonce", "n1")]),
                    "tok3n"
                ),
                Err(Refused::StaleTimestamp)
            );
        }
        let long = "n".repeat(65);
        assert_eq!(
            check_signature(
                &q(&[("signature", &good), ("timestamp", &now), ("nonce", &long)]),
                "tok3n"
            ),
            Err(Refused::MissingSignature)
        );
    }

    #[test]
    fn the_format_comes_from_the_content_type_or_the_first_byte() {
        let mut h = HeaderMap::new();
        assert!(is_xml(&h, b"  <xml></xml>"));
        assert!(!is_xml(&h, b"{}"));
        h.insert(header::CONTENT_TYPE, "text/xml".parse().unwrap());
        assert!(is_xml(&h, b"{}"));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(!is_xml(&h, b"<xml/>"));
    }
}
