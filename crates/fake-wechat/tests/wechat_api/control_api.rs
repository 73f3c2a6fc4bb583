//! The `/fake/...` control API over HTTP, as a test driving a separate `wxpush mock-wechat`
//! process would use it.

use serde_json::{json, Value};

use crate::common::*;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test]
async fn issue_form_ids_and_prepay_ids_over_http() {
    let h = start(config()).await;
    assert_eq!(
        get_json(&h, "/fake/health").await,
        (200, json!({"ok": true}))
    );
    let (status, body) = send_json(
        &h,
        "POST",
        "/fake/formids",
        r#"{"openId": "oUser1", "count": 3, "ttlSecs": 60}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids = strings(&body["formIds"]);
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }
    let expires_at = body["expiresAt"].as_u64().expect("expiresAt");
    let now = h.requests().first().map_or(0, |r| r.at_ms);
    assert!(expires_at > 1_600_000_000_000 && (now == 0 || expires_at > now));

    let (status, body) = send_json(
        &h,
        "POST",
        "/fake/prepayids",
        &format!(r#"{{"appId": "{APP2}", "openId": "oUser9"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p = strings(&body["prepayIds"]);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].len(), 36);
    assert!(p[0].starts_with("wx20"));

    assert_eq!(
        get_json(&h, &format!("/fake/formids/{}", ids[0])).await,
        (200, json!({"uses": 0}))
    );
    let (status, _) = get_json(&h, "/fake/formids/nope").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn setup_send_and_inspect_over_http() {
    let h = start(config()).await;
    let c = client(&h);
    let t = token(&c).await;
    let ok = |r: (u16, Value)| assert_eq!(r.0, 200, "{}", r.1);
    ok(send_json(
        &h,
        "POST",
        "/fake/templates",
        r#"{"templateId": "TPL_NEW"}"#,
    )
    .await);
    ok(send_json(&h, "POST", "/fake/users", r#"{"openId": "oUser1"}"#).await);
    let (_, left) = send_json(
        &h,
        "POST",
        "/fake/consents",
        r#"{"openId": "oUser1", "templateId": "TPL_NEW", "count": 2}"#,
    )
    .await;
    assert_eq!(left, json!({"left": 2}));
    let mut m = subscribe("oUser1", good_data());
    m.template_id = "TPL_NEW".into();
    assert!(c.send_subscribe(&t.token, &m).await.is_sent());
    assert_eq!(
        get_json(&h, "/fake/consents?openId=oUser1&templateId=TPL_NEW").await,
        (200, json!({"left": 1}))
    );

    let (_, stats) = get_json(&h, "/fake/stats").await;
    assert_eq!(stats["sendsAccepted"], 1);
    assert_eq!(stats["sendsByOpenId"]["oUser1"], 1);
    assert_eq!(stats["tokenFetches"][APP], 1);
    assert_eq!(stats["answersByErrcode"]["0"], 2);
    assert_eq!(stats["requests"], 2);

    let (_, all) = get_json(&h, "/fake/requests").await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert_eq!(all[1]["endpoint"], "subscribeSend");
    assert_eq!(all[1]["touser"], "oUser1");
    assert_eq!(all[1]["templateId"], "TPL_NEW");
    assert_eq!(all[1]["errcode"], 0);
    let (_, tail) = get_json(&h, "/fake/requests?since=1").await;
    assert_eq!(tail.as_array().map(Vec::len), Some(1));

    let (_, expired) = send_json(&h, "POST", "/fake/tokens/expire", "").await;
    assert_eq!(expired, json!({"expired": 1}));

    ok(send_json(&h, "POST", "/fake/reset", "").await);
    let (_, stats) = get_json(&h, "/fake/stats").await;
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["sendsAccepted"], 0);
    let (_, left) = get_json(&h, "/fake/consents?openId=oUser1&templateId=TPL_NEW").await;
    assert_eq!(left, json!({"left": 0}));
    // Tokens are gone too: the old one is unknown now.
    let f = form_id(&h, "oUser1");
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert_eq!(out, wxpush_wechat::Outcome::BadToken { code: 40001 });
}

#[tokio::test]
async fn faults_and_token_outage_over_http() {
    let h = start(config()).await;
    let (status, set) = send_json(
        &h,
        "PUT",
        "/fake/faults",
        r#"{"busyProbability": 0.25, "latencyMs": 5, "sendQuotaPerSec": 100}"#,
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let (_, got) = get_json(&h, "/fake/faults").await;
    assert_eq!(got["busyProbability"], 0.25);
    assert_eq!(got["http500Probability"], 0.0);
    assert_eq!(got["latencyMs"], 5);
    assert_eq!(got["sendQuotaPerSec"], 100);
    assert_eq!(got["minuteQuota"], Value::Null);
    assert_eq!(h.faults().send_quota_per_sec, Some(100));

    let (status, _) = send_json(&h, "PUT", "/fake/faults", r#"{"busyProbability": 2}"#).await;
    assert_eq!(status, 400);

    let (status, _) = send_json(&h, "POST", "/fake/token-outage", r#"{"forMs": 60000}"#).await;
    assert_eq!(status, 200);
    let e = client(&h)
        .fetch_token(&app(), &secret())
        .await
        .expect_err("outage");
    assert!(e.is_transient());
}

#[tokio::test]
async fn control_errors_are_400_or_404() {
    let h = start(config()).await;
    let (status, body) = send_json(
        &h,
        "POST",
        "/fake/formids",
        r#"{"appId": "wxnope", "openId": "o1"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("wxnope")));
    let (status, _) = send_json(&h, "POST", "/fake/formids", r#"{"count": 1}"#).await;
    assert_eq!(status, 400);
    let (status, _) = send_json(&h, "POST", "/fake/users", "not json").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_handle_stops_serving_on_shutdown() {
    let h = start(config()).await;
    let base = h.base_url();
    h.shutdown().await;
    let err = http()
        .get(format!("{base}/fake/health"))
        .send()
        .await
        .expect_err("stopped");
    assert!(err.is_connect(), "{err}");
}

#[tokio::test]
async fn serve_runs_on_a_given_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = wxpush_fake_wechat::FakeWeChat::new(config()).expect("fake");
    let task = tokio::spawn(wxpush_fake_wechat::serve(listener, fake.clone()));
    let c = wxpush_wechat::Client::new(&wxpush_wechat::ClientConfig::with_base_url(format!(
        "http://{addr}"
    )))
    .expect("client");
    assert!(c.fetch_token(&app(), &secret()).await.is_ok());
    assert_eq!(fake.token_fetches(APP), 1);
    task.abort();
}

/// A fake served on `bind` (port 0) with `token`, and its base URL over loopback.
async fn serve_on(
    bind: &str,
    token: Option<&'static str>,
) -> (
    String,
    wxpush_fake_wechat::FakeWeChat,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fake = wxpush_fake_wechat::FakeWeChat::new(config()).expect("fake");
    let task = tokio::spawn(wxpush_fake_wechat::serve_with_control(
        listener,
        fake.clone(),
        token,
        std::future::pending(),
    ));
    (format!("http://127.0.0.1:{port}"), fake, task)
}

/// `method path` with an optional `Authorization` header: the status and the body as text.
async fn call(
    base: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http()
        .request(method, format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test]
async fn beyond_loopback_without_a_token_the_control_api_is_refused_and_wechat_still_served() {
    let (base, fake, task) = serve_on("0.0.0.0:0", None).await;
    let busy = r#"{"busyProbability": 1.0}"#;
    let (status, body) = call(&base, "PUT", "/fake/faults", None, busy).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("WXPUSH_MOCK_CONTROL_TOKEN"), "{body}");
    assert_eq!(
        fake.faults().busy_probability,
        0.0,
        "a refused call changed nothing"
    );
    for (method, path) in [("GET", "/fake/stats"), ("POST", "/fake/reset")] {
        let (status, body) = call(&base, method, path, Some("Bearer anything"), "").await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    // Health and the WeChat API routes stay open.
    assert_eq!(call(&base, "GET", "/fake/health", None, "").await.0, 200);
    let c = wxpush_wechat::Client::new(&wxpush_wechat::ClientConfig::with_base_url(base))
        .expect("client");
    assert!(c.fetch_token(&app(), &secret()).await.is_ok());
    task.abort();
}

#[tokio::test]
async fn a_control_token_once_set_is_required_on_any_address() {
    const TOKEN: &str = "control-token-0123456789";
    for bind in ["0.0.0.0:0", "127.0.0.1:0"] {
        let (base, fake, task) = serve_on(bind, Some(TOKEN)).await;
        let busy = r#"{"busyProbability": 1.0}"#;
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer control-token-0123456788"), // same length, last byte differs
            Some("Basic control-token-0123456789"),
            Some("Bearer "),
        ] {
            let (status, body) = call(&base, "PUT", "/fake/faults", auth, busy).await;
            assert_eq!(status, 401, "{bind} {auth:?}: {body}");
            assert!(!body.contains(TOKEN), "{body}");
        }
        assert_eq!(fake.faults().busy_probability, 0.0, "{bind}: unchanged");
        let auth = format!("Bearer {TOKEN}");
        let (status, body) = call(&base, "PUT", "/fake/faults", Some(&auth), busy).await;
        assert_eq!(status, 200, "{bind}: {body}");
        assert_eq!(fake.faults().busy_probability, 1.0, "{bind}: set");
        assert_eq!(call(&base, "GET", "/fake/health", None, "").await.0, 200);
        task.abort();
    }
}

#[test]
fn the_control_access_rule_and_its_debug_form() {
    use wxpush_fake_wechat::ControlAccess;
    let on = |a: &str, t: Option<&str>| {
        format!("{:?}", ControlAccess::for_listener(a.parse().unwrap(), t))
    };
    assert_eq!(on("127.0.0.1:8089", None), "Open");
    assert_eq!(on("[::1]:8089", None), "Open");
    assert_eq!(on("0.0.0.0:8089", None), "Refused");
    assert_eq!(on("[::]:8089", None), "Refused");
    assert_eq!(
        on("10.1.2.3:8089", Some("")),
        "Refused",
        "an empty token is no token"
    );
    assert_eq!(on("10.1.2.3:8089", Some("s3cret")), "Token(***)");
    assert_eq!(on("127.0.0.1:8089", Some("s3cret")), "Token(***)");
}

#[tokio::test]
async fn every_fault_knob_by_its_json_name_at_start_and_over_http() {
    let knobs = json!({
        "busyProbability": 0.0, "http500Probability": 0.0, "latencyMs": 1,
        "latencyJitterMs": 2, "sendQuotaPerSec": 3, "minuteQuota": 4,
        "refuseSubscribeData": true, "lostReplyProbability": 0.5, "lostReplyMode": "hang",
        "lostReplyStatus": 502, "lostReplyHangMs": 7, "outageStatus": 503,
        "outageTokens": true, "outageUntilMs": 8, "tokenLatencyMs": 9,
        "checkExpiryFirst": true
    });
    let cfg: wxpush_fake_wechat::FakeConfig =
        serde_json::from_value(json!({"apps": [{"appId": APP, "secret": SECRET}],
                                      "faults": knobs}))
        .expect("a FakeConfig");
    let f = &cfg.faults;
    assert_eq!(
        (
            f.latency_ms,
            f.latency_jitter_ms,
            f.send_quota_per_sec,
            f.minute_quota
        ),
        (1, 2, Some(3), Some(4))
    );
    assert!(f.refuse_subscribe_data && f.outage_tokens);
    assert_eq!(f.lost_reply_probability, 0.5);
    assert_eq!(f.lost_reply_mode, wxpush_fake_wechat::LostReplyMode::Hang);
    assert_eq!((f.lost_reply_status, f.lost_reply_hang_ms), (502, 7));
    assert_eq!((f.outage_status, f.outage_until_ms), (Some(503), Some(8)));
    assert_eq!(f.token_latency_ms, 9);
    assert!(f.check_expiry_first);
    let h = start(cfg).await;
    assert_eq!(get_json(&h, "/fake/faults").await, (200, knobs.clone()));

    // A PUT replaces every knob: the missing ones are back to their defaults (off).
    let (status, _) = send_json(&h, "PUT", "/fake/faults", r#"{"tokenLatencyMs": 5}"#).await;
    assert_eq!(status, 200);
    let (_, got) = get_json(&h, "/fake/faults").await;
    assert_eq!(
        got,
        json!({
            "busyProbability": 0.0, "http500Probability": 0.0, "latencyMs": 0,
            "latencyJitterMs": 0, "sendQuotaPerSec": null, "minuteQuota": null,
            "refuseSubscribeData": false, "lostReplyProbability": 0.0,
            "lostReplyMode": "status", "lostReplyStatus": 504, "lostReplyHangMs": 60000,
            "outageStatus": null, "outageTokens": false, "outageUntilMs": null,
            "tokenLatencyMs": 5, "checkExpiryFirst": false
        })
    );
}
