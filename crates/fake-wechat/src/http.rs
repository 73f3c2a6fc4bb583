//! The WeChat API routes (`/cgi-bin/...`) over HTTP: extract the request, let [`State`] judge
//! it under the lock, then wait the injected latency and answer (or cut the connection).
//!
//! This module owns only the translation between HTTP and `State` calls, and the waits. It must
//! not hold the lock across an await, and must not log per request above debug level.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use crate::conn::Cut;
use crate::ids::now_ms;
use crate::state::{Body, Reply};
use crate::FakeWeChat;

type Params = Query<HashMap<String, String>>;
/// The connection's switch; absent when the router is served by something other than
/// [`crate::serve_with_control`].
type Conn = Option<Extension<ConnectInfo<Cut>>>;

pub(crate) fn routes() -> Router<FakeWeChat> {
    Router::new()
        .route("/cgi-bin/token", get(token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/cgi-bin/message/wxopen/template/send", post(template_send))
        .route("/cgi-bin/message/subscribe/send", post(subscribe_send))
}

async fn respond(reply: Reply, conn: Conn) -> Response {
    if reply.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.latency_ms)).await;
    }
    if reply.reset {
        match conn {
            Some(Extension(ConnectInfo(cut))) => cut.cut(),
            // No switch to cut with: the nearest thing, a gateway's "the upstream reset".
            None => return (StatusCode::BAD_GATEWAY, "connection reset").into_response(),
        }
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.body {
        Body::Text { content_type, text } => {
            (status, [(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Body::Json(body) => (status, Json(body)).into_response(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("data format error hint: {e}"))
}

/// Judges a token call after `tokenLatencyMs`. The wait and the judgement run in their own
/// task, so a caller that gives up waiting does not stop the token being issued.
async fn after_token_latency(
    fake: FakeWeChat,
    judge: impl FnOnce(&FakeWeChat) -> Reply + Send + 'static,
) -> Reply {
    let delay = fake.with(|s| s.token_latency_ms());
    if delay == 0 {
        return judge(&fake);
    }
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        judge(&fake)
    });
    task.await.unwrap_or_else(|_| Reply {
        status: 500,
        body: Body::Text {
            content_type: "text/plain",
            text: "the fake's token task failed".to_owned(),
        },
        latency_ms: 0,
        reset: false,
    })
}

async fn token(State(fake): State<FakeWeChat>, conn: Conn, Query(q): Params) -> Response {
    let received = now_ms();
    let reply = after_token_latency(fake, move |fake| {
        let get = |k: &str| q.get(k).map(String::as_str);
        fake.with(|s| {
            s.token(
                get("grant_type"),
                get("appid"),
                get("secret"),
                received,
                now_ms(),
            )
        })
    })
    .await;
    respond(reply, conn).await
}

async fn stable_token(State(fake): State<FakeWeChat>, conn: Conn, body: Bytes) -> Response {
    let received = now_ms();
    let parsed = parse(&body);
    let reply = after_token_latency(fake, move |fake| {
        fake.with(|s| s.stable_token(parsed, received, now_ms()))
    })
    .await;
    respond(reply, conn).await
}

async fn template_send(
    State(fake): State<FakeWeChat>,
    conn: Conn,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let received = now_ms();
    let parsed = parse(&body);
    let token = q.get("access_token").map(String::as_str);
    let reply = fake.with(|s| s.template_send(token, parsed, received, now_ms()));
    respond(reply, conn).await
}

async fn subscribe_send(
    State(fake): State<FakeWeChat>,
    conn: Conn,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let received = now_ms();
    let parsed = parse(&body);
    let token = q.get("access_token").map(String::as_str);
    let reply = fake.with(|s| s.subscribe_send(token, parsed, received, now_ms()));
    respond(reply, conn).await
}
