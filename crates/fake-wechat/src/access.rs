//! Who may use the control API (`/fake/...`): open on a loopback listener, behind a bearer
//! token when one is configured, refused on any other address.
//!
//! This module owns that decision and the guard that enforces it on the control routes. It
//! must not guard the WeChat API routes (`/cgi-bin/...`), which stay as open as WeChat's, nor
//! `/fake/health`, which changes and reveals nothing and lets a role recognise the fake. The
//! token never appears in a log, an answer or a `Debug` output.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;

/// Who may call the control API. Build it with [`ControlAccess::for_listener`].
#[derive(Clone)]
pub enum ControlAccess {
    /// Anyone who reaches the listener: a loopback listener, so only this machine.
    Open,
    /// Requests carrying `Authorization: Bearer <token>`.
    Token(Arc<str>),
    /// Nobody: the listener is reachable from other machines and no token is configured.
    Refused,
}

impl std::fmt::Debug for ControlAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ControlAccess::Open => "Open",
            ControlAccess::Token(_) => "Token(***)",
            ControlAccess::Refused => "Refused",
        })
    }
}

impl ControlAccess {
    /// The rule for a listener on `addr`: a configured (non-empty) token is always required;
    /// without one the control API is open on a loopback address and refused on any other
    /// (`0.0.0.0` included), so a fake reachable from the network is never controlled by
    /// whoever reaches it.
    pub fn for_listener(addr: SocketAddr, token: Option<&str>) -> Self {
        match token.filter(|t| !t.is_empty()) {
            Some(t) => ControlAccess::Token(t.into()),
            None if addr.ip().is_loopback() => ControlAccess::Open,
            None => ControlAccess::Refused,
        }
    }

    /// One line saying who may use the control API, for the fake's start-up log.
    pub fn describe(&self) -> &'static str {
        match self {
            ControlAccess::Open => "control API (/fake/...) open: loopback listener",
            ControlAccess::Token(_) => {
                "control API (/fake/...) requires `Authorization: Bearer <token>`"
            }
            ControlAccess::Refused => {
                "control API (/fake/...) refused (403): not a loopback listener and no control \
                 token set; the WeChat API routes serve as usual"
            }
        }
    }
}

/// The guard in front of the control routes.
pub(crate) async fn guard(
    State(access): State<ControlAccess>,
    request: Request,
    next: Next,
) -> Response {
    match &access {
        ControlAccess::Open => next.run(request).await,
        ControlAccess::Refused => refuse(
            StatusCode::FORBIDDEN,
            "the control API is refused: this fake listens beyond loopback and no control \
             token is set (WXPUSH_MOCK_CONTROL_TOKEN)",
        ),
        ControlAccess::Token(expected) => {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map_or("", |(_, token)| token.trim());
            // Constant time over the bytes; only the lengths may differ in timing.
            if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                next.run(request).await
            } else {
                let mut answer = refuse(
                    StatusCode::UNAUTHORIZED,
                    "the control API needs `Authorization: Bearer <token>` with the fake's \
                     control token",
                );
                answer.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                answer
            }
        }
    }
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}
