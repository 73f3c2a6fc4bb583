//! The control API (`/fake/...`, JSON, camelCase) through which tests in another process set up
//! and inspect the fake: the same operations as the methods of [`FakeWeChat`].
//!
//! This module owns only the HTTP shapes of those operations. It must not implement WeChat
//! rules (they live in `state`), nor decide who may call it (that is `access`, whose guard
//! sits in front of every route here but `/fake/health`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access::{self, ControlAccess};
use crate::config::Faults;
use crate::state::FakeError;
use crate::FakeWeChat;

/// The control routes, guarded by `access`; `/fake/health` is always open.
pub(crate) fn routes(access: ControlAccess) -> Router<FakeWeChat> {
    let guarded = Router::new()
        .route("/fake/formids", post(form_ids))
        .route("/fake/formids/{id}", get(form_id_uses))
        .route("/fake/prepayids", post(prepay_ids))
        .route("/fake/users", post(users))
        .route("/fake/templates", post(templates))
        .route("/fake/consents", post(grant_consents).get(consents_left))
        .route("/fake/faults", get(faults).put(set_faults))
        .route("/fake/token-outage", post(token_outage))
        .route("/fake/tokens/expire", post(expire_tokens))
        .route("/fake/tokens/revoke", post(revoke_tokens))
        .route("/fake/secret", post(set_secret))
        .route("/fake/requests", get(requests))
        .route("/fake/stats", get(stats))
        .route("/fake/reset", post(reset))
        .route("/fake/push", post(push))
        .route_layer(middleware::from_fn_with_state(access, access::guard));
    Router::new()
        .route(
            "/fake/health",
            get(|| async { Json(json!({ "ok": true })) }),
        )
        .merge(guarded)
}

impl IntoResponse for FakeError {
    fn into_response(self) -> Response {
        let status = match self {
            FakeError::UnknownApp(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

type Answer = Result<Json<Value>, FakeError>;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FakeError> {
    serde_json::from_slice(body).map_err(|e| FakeError::BadRequest(e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssueReq {
    app_id: Option<String>,
    open_id: String,
    #[serde(default = "one")]
    count: usize,
    ttl_secs: Option<u64>,
    ttl_ms: Option<u64>,
}

fn one() -> usize {
    1
}

impl IssueReq {
    fn ttl(&self) -> Option<Duration> {
        self.ttl_ms
            .map(Duration::from_millis)
            .or(self.ttl_secs.map(Duration::from_secs))
    }
}

async fn form_ids(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: IssueReq = parse(&body)?;
    let (ids, expires_at) =
        fake.issue_with_expiry(r.app_id.as_deref(), &r.open_id, r.count, r.ttl(), 1)?;
    Ok(Json(json!({ "formIds": ids, "expiresAt": expires_at })))
}

async fn prepay_ids(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: IssueReq = parse(&body)?;
    let (ids, expires_at) =
        fake.issue_with_expiry(r.app_id.as_deref(), &r.open_id, r.count, r.ttl(), 3)?;
    Ok(Json(json!({ "prepayIds": ids, "expiresAt": expires_at })))
}

async fn form_id_uses(State(fake): State<FakeWeChat>, Path(id): Path<String>) -> Response {
    match fake.form_id_uses(&id) {
        Some(uses) => Json(json!({ "uses": uses })).into_response(),
        None => FakeError::BadRequest(format!("unknown formId {id:?}")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserReq {
    app_id: Option<String>,
    open_id: String,
}

async fn users(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: UserReq = parse(&body)?;
    fake.register_user(r.app_id.as_deref(), &r.open_id)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateReq {
    app_id: Option<String>,
    template_id: String,
}

async fn templates(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: TemplateReq = parse(&body)?;
    fake.add_template(r.app_id.as_deref(), &r.template_id)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsentReq {
    app_id: Option<String>,
    open_id: String,
    template_id: String,
    #[serde(default)]
    count: u32,
}

async fn grant_consents(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: ConsentReq = parse(&body)?;
    let left = fake.grant_consents(r.app_id.as_deref(), &r.open_id, &r.template_id, r.count)?;
    Ok(Json(json!({ "left": left })))
}

async fn consents_left(State(fake): State<FakeWeChat>, Query(r): Query<ConsentReq>) -> Answer {
    let left = fake.consents_left(r.app_id.as_deref(), &r.open_id, &r.template_id)?;
    Ok(Json(json!({ "left": left })))
}

async fn faults(State(fake): State<FakeWeChat>) -> Json<Faults> {
    Json(fake.faults())
}

async fn set_faults(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let f: Faults = parse(&body)?;
    fake.set_faults(f.clone())?;
    Ok(Json(json!(f)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutageReq {
    for_ms: u64,
}

async fn token_outage(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: OutageReq = parse(&body)?;
    fake.token_outage(Duration::from_millis(r.for_ms));
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AppReq {
    app_id: Option<String>,
}

fn app_req(body: &[u8]) -> Result<AppReq, FakeError> {
    if body.is_empty() {
        Ok(AppReq::default())
    } else {
        parse(body)
    }
}

async fn expire_tokens(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let n = fake.expire_tokens(app_req(&body)?.app_id.as_deref())?;
    Ok(Json(json!({ "expired": n })))
}

async fn revoke_tokens(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let n = fake.revoke_tokens(app_req(&body)?.app_id.as_deref())?;
    Ok(Json(json!({ "revoked": n })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretReq {
    app_id: Option<String>,
    secret: String,
}

async fn set_secret(State(fake): State<FakeWeChat>, body: Bytes) -> Answer {
    let r: SecretReq = parse(&body)?;
    fake.set_secret(r.app_id.as_deref(), &r.secret)?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct SinceReq {
    #[serde(default)]
    since: usize,
}

async fn requests(State(fake): State<FakeWeChat>, Query(r): Query<SinceReq>) -> Response {
    Json(fake.requests_since(r.since)).into_response()
}

async fn stats(State(fake): State<FakeWeChat>) -> Response {
    Json(fake.stats()).into_response()
}

async fn reset(State(fake): State<FakeWeChat>) -> Json<Value> {
    fake.reset();
    Json(json!({}))
}

/// `POST /fake/push`: WeChat's message push of one event to the URL given
/// ([`crate::push::PushSpec`]), signed, encrypted in secure mode, sent `times` times.
async fn push(body: Bytes) -> Answer {
    let spec: crate::push::PushSpec = parse(&body)?;
    let report = crate::push::push_event(&spec).await?;
    Ok(Json(json!(report)))
}
