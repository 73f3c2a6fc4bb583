//! Where the fleet's token comes from and what it believes of it, against the machine's real
//! Redis: a lifetime of any size never leaves the shared token without a TTL.

mod support;

use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use support::*;
use wxpush_wechat::MAX_TOKEN_LIFETIME_SECS;

/// Serves `router` on a free port of 127.0.0.1; the base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// A "WeChat" whose token endpoints both answer `answer`.
async fn wechat_answering(answer: Value) -> String {
    let (a, b) = (answer.clone(), answer);
    serve(
        Router::new()
            .route("/cgi-bin/token", get(move || async move { Json(a) }))
            .route(
                "/cgi-bin/stable_token",
                post(move || async move { Json(b) }),
            ),
    )
    .await
}

#[tokio::test]
async fn a_token_announced_to_live_for_ever_is_shared_two_days_at_most() {
    let ns = TestNs::new("forever");
    let base = wechat_answering(
        json!({"access_token": "TOKEN-for-ever", "expires_in": 18446744073709551615u64}),
    )
    .await;
    let s = store(&ns, &base, settings()).await;
    let token = s.get().await.expect("a token, not a panic");
    assert_eq!(token.expose(), "TOKEN-for-ever");
    let keys = ns.keys_with_pttl();
    let (key, ttl) = keys
        .iter()
        .find(|(k, _)| k.starts_with(&format!("{}:token:{{", ns.ns)))
        .unwrap_or_else(|| panic!("no token key in {keys:?}"));
    assert!(
        *ttl > 0 && *ttl <= (MAX_TOKEN_LIFETIME_SECS * 1000) as i64,
        "{key} has TTL {ttl}"
    );
    let lifetime = token.expires_at_ms() - token.fetched_at_ms();
    assert_eq!(lifetime, MAX_TOKEN_LIFETIME_SECS * 1000);
    // A negative lifetime is the shortest one believed, and expires by itself too.
    let ns = TestNs::new("negative");
    let base = wechat_answering(json!({"access_token": "TOKEN-neg", "expires_in": -7200})).await;
    let s = store(&ns, &base, settings()).await;
    let token = s.get().await.expect("a token");
    assert!(token.remaining() <= Duration::from_secs(1));
    for (k, ttl) in ns.keys_with_pttl() {
        assert!(ttl > 0, "{k} has no expiry ({ttl})");
    }
}
