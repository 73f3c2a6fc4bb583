//! The WeChat API routes (`/cgi-bin/...`) over HTTP: extract the request, let [`State`] judge
//! it under the lock, then wait the injected latency and answer.
//!
//! This module owns only the translation between HTTP and `State` calls. It must not hold the
//! lock across an await, and must not log per request above debug level.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::ids::now_ms;
use crate::state::Reply;
use crate::FakeWeChat;

type Params = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<FakeWeChat> {
    Router::new()
        .route("/cgi-bin/token", get(token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/cgi-bin/message/wxopen/template/send", post(template_send))
        .route("/cgi-bin/message/subscribe/send", post(subscribe_send))
}

async fn respond(reply: Reply) -> Response {
    if reply.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.latency_ms)).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.body {
        serde_json::Value::String(text) => {
            (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
        }
        body => (status, Json(body)).into_response(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("data format error hint: {e}"))
}

async fn token(State(fake): State<FakeWeChat>, Query(q): Params) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str);
    let reply = fake.with(|s| s.token(get("grant_type"), get("appid"), get("secret"), now_ms()));
    respond(reply).await
}

async fn stable_token(State(fake): State<FakeWeChat>, body: Bytes) -> Response {
    let parsed = parse(&body);
    let reply = fake.with(|s| s.stable_token(parsed, now_ms()));
    respond(reply).await
}

async fn template_send(State(fake): State<FakeWeChat>, Query(q): Params, body: Bytes) -> Response {
    let parsed = parse(&body);
    let token = q.get("access_token").map(String::as_str);
    let reply = fake.with(|s| s.template_send(token, parsed, now_ms()));
    respond(reply).await
}

async fn subscribe_send(State(fake): State<FakeWeChat>, Query(q): Params, body: Bytes) -> Response {
    let parsed = parse(&body);
    let token = q.get("access_token").map(String::as_str);
    let reply = fake.with(|s| s.subscribe_send(token, parsed, now_ms()));
    respond(reply).await
}
