//! WeChat's message push end to end (contract §8.4): the real `wxpush events` process, the real
//! Redis, pushes made by the fake WeChat as WeChat makes them (signed; sealed with the
//! EncodingAESKey in secure mode; JSON or XML; `List` one object or an array; retried), and
//! the consents they carry spent by the real `wxpush dispatch` and `wxpush send`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use wxpush_domain::OpenId;
use wxpush_fake_wechat::{push_event, PushFormat, PushItem, PushKind, PushSpec};
use wxpush_testkit::fleet::Fleet;
use wxpush_testkit::{eventually, free_addr, http_get, http_post_json, CapturedStderr, TEST_APP};
use wxpush_wechat::push_crypto::signature;

const TOKEN: &str = "pushTok3n";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const TPL: &str = "TPL_ORDER_SHIPPED";
const TPL_B: &str = "TPL_APPOINTMENT";

fn user(n: usize) -> String {
    format!("oEvt{n:06}xxxxxxxxxxxxxxxxxx")
}

/// A fleet whose app has a push token (and, `secure`, an EncodingAESKey) and the consent
/// source given, with `wxpush events` started on a free port: the fleet and the events
/// process's push and metrics addresses.
async fn fleet(name: &str, secure: bool, source: &str) -> (Fleet, SocketAddr, SocketAddr) {
    let (f, events, metrics, _) = fleet_with(name, secure, source, &[]).await;
    (f, events, metrics)
}

/// [`fleet`], the events process started with `vars` besides; its stderr, collected as it
/// is written.
async fn fleet_with(
    name: &str,
    secure: bool,
    source: &str,
    vars: &[(&str, &str)],
) -> (Fleet, SocketAddr, SocketAddr, CapturedStderr) {
    let mut f = Fleet::new(name, 100_000, 100).await;
    f.env.set("WXPUSH_PUSH_TOKEN", TOKEN);
    if secure {
        f.env.set("WXPUSH_ENCODING_AES_KEY", AES_KEY);
    }
    f.env.set("WXPUSH_CONSENT_SOURCE", source);
    let (events, metrics) = (free_addr(), free_addr());
    let (events_s, metrics_s) = (events.to_string(), metrics.to_string());
    let mut all = vec![
        ("WXPUSH_EVENTS_ADDR", events_s.as_str()),
        ("WXPUSH_HTTP_ADDR", metrics_s.as_str()),
    ];
    all.extend_from_slice(vars);
    let i = f.start_with("events", &all);
    let log = CapturedStderr::take(&mut f.children[i]);
    let up = eventually(Duration::from_secs(30), || async {
        http_get(events, "/wechat/x").await.is_some()
    })
    .await;
    assert!(up, "wxpush events listens: {}", log.text());
    (f, events, metrics, log)
}

fn spec(events: SocketAddr, kind: PushKind, who: &str, items: &[(&str, &str)]) -> PushSpec {
    PushSpec {
        url: format!("http://{events}/wechat/{TEST_APP}"),
        app_id: TEST_APP.into(),
        token: TOKEN.into(),
        encoding_aes_key: None,
        format: PushFormat::Json,
        kind,
        open_id: who.into(),
        items: items
            .iter()
            .map(|(t, s)| PushItem {
                template_id: (*t).into(),
                status: Some((*s).into()),
                ..PushItem::default()
            })
            .collect(),
        create_time: None,
        list_as_array: false,
        times: 1,
        same_nonce: false,
        timestamp_offset_secs: 0,
        sign_with: None,
    }
}

async fn consents(f: &Fleet, who: &str, template: &str) -> u64 {
    f.deps
        .bank
        .consents_left(&f.env.app, &OpenId::new(who).unwrap(), template)
        .await
        .unwrap()
}

/// The value of `metric{labels}` on `/metrics` (0 when absent).
async fn metric(addr: SocketAddr, metric: &str, labels: &str) -> u64 {
    let (_, body) = http_get(addr, "/metrics").await.unwrap_or_default();
    let prefix = format!("{metric}{{{labels}}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn now() -> String {
    (wxpush_testkit::now_ms() / 1000).to_string()
}

/// A raw signed POST (a body of our choosing).
async fn raw_post(addr: SocketAddr, query: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /wechat/{TEST_APP}?{query} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_signed_fresh_and_new_or_refused_and_never_stored() {
    let (mut f, events, metrics) = fleet("ev_sign", false, "events").await;
    let who = user(1);

    // The server check: echostr echoed only under the right signature.
    let (t, n) = (now(), "4242");
    let sig = signature(&[TOKEN, &t, n]);
    let check = format!("/wechat/{TEST_APP}?signature={sig}&timestamp={t}&nonce={n}&echostr=e1");
    assert_eq!(http_get(events, &check).await, Some((200, "e1".into())));
    let forged = signature(&["other", &t, n]);
    let bad = format!("/wechat/{TEST_APP}?signature={forged}&timestamp={t}&nonce={n}&echostr=e1");
    assert_eq!(http_get(events, &bad).await.unwrap().0, 403);
    let missing = format!("/wechat/{TEST_APP}?timestamp={t}&nonce={n}&echostr=e1");
    assert_eq!(http_get(events, &missing).await.unwrap().0, 400);
    assert_eq!(
        http_get(events, &check.replace(TEST_APP, "wxunknown0000001"))
            .await
            .unwrap()
            .0,
        404
    );

    // A forged push, a stale one, one without its signature: refused, nothing stored.
    let mut forged = spec(events, PushKind::Popup, &who, &[(TPL, "accept")]);
    forged.sign_with = Some("n0tTheToken".into());
    assert_eq!(push_event(&forged).await.unwrap().statuses, [403]);
    let mut stale = spec(events, PushKind::Popup, &who, &[(TPL, "accept")]);
    stale.timestamp_offset_secs = -600;
    assert_eq!(push_event(&stale).await.unwrap().statuses, [403]);
    let unsigned = raw_post(events, &format!("timestamp={t}&nonce=77"), b"{}").await;
    assert_eq!(unsigned.0, 400);
    assert_eq!(
        consents(&f, &who, TPL).await,
        0,
        "nothing refused is stored"
    );

    // A replay of one request (same nonce, timestamp and signature): refused the second time.
    let mut replayed = spec(events, PushKind::Popup, &who, &[(TPL, "accept")]);
    replayed.times = 2;
    replayed.same_nonce = true;
    let report = push_event(&replayed).await.unwrap();
    assert_eq!(report.statuses, [200, 409], "{report:?}");
    assert_eq!(report.bodies[0], "success");
    assert_eq!(consents(&f, &who, TPL).await, 1);

    // Too large a body: 413 (signed, so only its size is at fault).
    let (t2, n2) = (now(), "5151");
    let sig2 = signature(&[TOKEN, &t2, n2]);
    let big = vec![b' '; 70 * 1024];
    let (status, _) = raw_post(
        events,
        &format!("signature={sig2}&timestamp={t2}&nonce={n2}"),
        &big,
    )
    .await;
    assert_eq!(status, 413);

    // Ready while it listens and Redis answers.
    let ready = eventually(Duration::from_secs(10), || async {
        http_get(metrics, "/readyz")
            .await
            .is_some_and(|(status, body)| {
                status == 200 && body.contains("\"consuming\":{\"events\":true}")
            })
    })
    .await;
    assert!(ready, "{:?}", http_get(metrics, "/readyz").await);

    // Counted, by why.
    for (result, at_least) in [
        ("bad_signature", 2),
        ("stale_timestamp", 1),
        ("missing_signature", 2),
        ("replayed_nonce", 1),
        ("too_large", 1),
        ("unknown_app", 1),
        ("ok", 1),
        ("server_check", 1),
    ] {
        let n = metric(
            metrics,
            "wxpush_event_requests_total",
            &format!("result=\"{result}\""),
        )
        .await;
        assert!(n >= at_least, "{result}: {n}");
    }
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_mode_pushes_in_xml_and_json_give_consents_a_campaign_spends() {
    let (mut f, events, metrics) = fleet("ev_secure", true, "events").await;
    let fake = f.fake.fake();
    fake.add_template(None, TPL).unwrap();
    let users: Vec<String> = (0..4).map(user).collect();
    for (i, who) in users.iter().enumerate() {
        // WeChat's side holds the consent the popup reports.
        fake.register_user(None, who).unwrap();
        fake.grant_consents(None, who, TPL, 1).unwrap();
        let mut s = spec(
            events,
            PushKind::Popup,
            who,
            &[(TPL, "accept"), (TPL_B, "reject")],
        );
        s.encoding_aes_key = Some(AES_KEY.into());
        s.format = if i % 2 == 0 {
            PushFormat::Xml
        } else {
            PushFormat::Json
        };
        // WeChat retries a push it got no answer for: the same event, new nonces.
        s.times = if i == 0 { 3 } else { 1 };
        let report = push_event(&s).await.unwrap();
        assert!(report.statuses.iter().all(|s| *s == 200), "{report:?}");
    }
    for who in &users {
        assert_eq!(consents(&f, who, TPL).await, 1, "{who}: one consent");
        assert_eq!(
            consents(&f, who, TPL_B).await,
            0,
            "{who}: a reject adds none"
        );
    }
    assert_eq!(
        metric(
            metrics,
            "wxpush_events_total",
            "event=\"popup\",result=\"repeated\""
        )
        .await,
        2,
        "the two retries were recognised"
    );

    // One object List, and several accepts in an array.
    let mut one = spec(events, PushKind::Popup, &user(9), &[(TPL_B, "accept")]);
    one.encoding_aes_key = Some(AES_KEY.into());
    one.list_as_array = true;
    assert_eq!(push_event(&one).await.unwrap().statuses, [200]);
    assert_eq!(consents(&f, &user(9), TPL_B).await, 1);

    // With a key configured, a plain push (its body covered by no signature) is refused.
    let plain = spec(events, PushKind::Popup, &user(8), &[(TPL, "accept")]);
    assert_eq!(push_event(&plain).await.unwrap().statuses, [403]);
    assert_eq!(consents(&f, &user(8), TPL).await, 0);

    // Sealed for another app: refused.
    let mut other = spec(events, PushKind::Popup, &user(8), &[(TPL, "accept")]);
    other.encoding_aes_key = Some(AES_KEY.into());
    other.app_id = "wxsomeoneelse0001".into();
    assert_eq!(push_event(&other).await.unwrap().statuses, [403]);
    assert_eq!(consents(&f, &user(8), TPL).await, 0);

    // A sent event is answered (receipts are not built yet) and counted.
    let mut sent = spec(events, PushKind::Sent, &users[0], &[]);
    sent.encoding_aes_key = Some(AES_KEY.into());
    sent.items = vec![PushItem {
        template_id: TPL.into(),
        msg_id: Some("2209153400".into()),
        error_code: Some(0),
        ..PushItem::default()
    }];
    assert_eq!(push_event(&sent).await.unwrap().statuses, [200]);

    // The consents the events brought are spent by a subscribe campaign.
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(
        json!({"campaignId": "ev-1", "kind": "subscribe", "templateId": TPL,
        "data": {"thing1": {"value": "Your order shipped"}},
        "audience": {"openIds": users}}),
    )
    .await;
    f.wait_complete("ev-1", Duration::from_secs(60)).await;
    let delivered = f.delivered_per_user();
    for who in &users {
        assert_eq!(delivered.get(who), Some(&1), "{who} got the message");
        assert_eq!(consents(&f, who, TPL).await, 0, "{who}'s consent spent");
    }
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_client_popups_are_ignored_and_a_reject_clears_consents() {
    let (mut f, events, metrics) = fleet("ev_client", false, "client").await;
    let who = user(2);
    f.deps
        .bank
        .store(
            &f.env.app,
            &OpenId::new(&who).unwrap(),
            &[
                wxpush_domain::Credential::consent(TPL),
                wxpush_domain::Credential::consent(TPL),
                wxpush_domain::Credential::consent(TPL_B),
            ],
        )
        .await
        .unwrap();
    // Under "client", a popup's accept is the upload's to bring: ignored, counted.
    let popup = spec(events, PushKind::Popup, &who, &[(TPL, "accept")]);
    assert_eq!(push_event(&popup).await.unwrap().statuses, [200]);
    assert_eq!(consents(&f, &who, TPL).await, 2);
    assert_eq!(
        metric(
            metrics,
            "wxpush_events_total",
            "event=\"popup\",result=\"ignored_consent_source\""
        )
        .await,
        1
    );
    // A change's reject clears under either setting; XML, retried: once.
    let mut change = spec(events, PushKind::Change, &who, &[(TPL, "reject")]);
    change.format = PushFormat::Xml;
    change.times = 2;
    assert_eq!(push_event(&change).await.unwrap().statuses, [200, 200]);
    assert_eq!(consents(&f, &who, TPL).await, 0, "cleared");
    assert_eq!(consents(&f, &who, TPL_B).await, 1, "other templates kept");
    assert_eq!(
        metric(
            metrics,
            "wxpush_events_total",
            "event=\"change\",result=\"repeated\""
        )
        .await,
        1
    );
    // The fake's control call pushes the same way.
    let mut via_control = spec(events, PushKind::Change, &who, &[(TPL_B, "reject")]);
    via_control.list_as_array = true;
    let (status, body) = http_post_json(
        f.fake.addr(),
        "/fake/push",
        &serde_json::to_value(&via_control).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"statuses\":[200]"), "{body}");
    assert_eq!(consents(&f, &who, TPL_B).await, 0);
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_events_ingest_ignores_uploaded_subscriptions_and_counts_them() {
    let mut f = Fleet::new("ev_ingest", 100_000, 100).await;
    f.env.set("WXPUSH_PUSH_TOKEN", TOKEN);
    f.env.set("WXPUSH_CONSENT_SOURCE", "events");
    let metrics = free_addr();
    f.start_with("ingest", &[("WXPUSH_HTTP_ADDR", &metrics.to_string())]);
    let who = user(3);
    let upload = json!({"openId": who, "formIds": [{"formId": "f-evt-1", "expire": wxpush_testkit::now_ms() + 3_600_000}],
        "subscriptions": {"errMsg": "requestSubscribeMessage:ok", TPL: "accept", TPL_B: "accept"}});
    f.env.declare_ingest(&f.deps.broker).await;
    f.env
        .publish_uploads(&f.deps.broker, &[upload.to_string().into_bytes()])
        .await;
    let stored = eventually(Duration::from_secs(30), || async {
        f.deps
            .bank
            .usable_count(&f.env.app, &OpenId::new(&who).unwrap())
            .await
            .unwrap_or(0)
            == 1
    })
    .await;
    assert!(stored, "the upload's formId is stored");
    assert_eq!(consents(&f, &who, TPL).await, 0);
    assert_eq!(consents(&f, &who, TPL_B).await, 0);
    let counted = eventually(Duration::from_secs(10), || async {
        metric(
            metrics,
            "wxpush_credentials_stored_total",
            "result=\"consent_ignored\"",
        )
        .await
            == 2
    })
    .await;
    assert!(counted, "the two ignored consents are counted");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_does_not_answer_pushes_get_503_and_the_retry_is_stored_once() {
    if wxpush_testkit::redis_nodes::is_cluster() {
        println!("skipped on a Redis Cluster (a proxy in front of a seed is bypassed)");
        return;
    }
    use wxpush_testkit::proxy::{target_of, FaultProxy};
    let redis = wxpush_testkit::redis_url();
    let proxy = FaultProxy::start(target_of(&redis)).await;
    let via = proxy.url(&redis);
    let (mut f, events, _, _) = fleet_with(
        "ev_redis_down",
        true,
        "events",
        &[("WXPUSH_REDIS_URL", &via)],
    )
    .await;
    let who = user(5);
    let mut s = spec(events, PushKind::Popup, &who, &[(TPL, "accept")]);
    s.encoding_aes_key = Some(AES_KEY.into());
    s.create_time = Some(wxpush_testkit::now_ms() / 1000);
    proxy.down();
    proxy.cut();
    let started = std::time::Instant::now();
    let report = push_event(&s).await.unwrap();
    assert_eq!(report.statuses, [503], "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within WeChat's 5 s: {:?}",
        started.elapsed()
    );
    proxy.up();
    // WeChat retries the same event (new nonce): stored once, however often it comes.
    let stored = eventually(Duration::from_secs(30), || async {
        push_event(&s).await.unwrap().statuses == [200]
    })
    .await;
    assert!(stored, "the retry is stored once Redis answers");
    s.times = 2;
    assert_eq!(push_event(&s).await.unwrap().statuses, [200, 200]);
    assert_eq!(consents(&f, &who, TPL).await, 1);
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_push_setting_is_one_line_and_the_secrets_reach_no_output_even_at_trace() {
    // A key of the wrong length, a consent source that needs a token: one line, exit 1,
    // never the value.
    let mut env = wxpush_testkit::TestEnv::new("ev_config");
    env.set("WXPUSH_PUSH_TOKEN", TOKEN);
    env.set("WXPUSH_ENCODING_AES_KEY", &AES_KEY[..40]);
    let out = env.command(&["events"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "wxpush: WXPUSH_ENCODING_AES_KEY is invalid: is not 43 characters of base64 (it has 40 \
         characters)"
    );
    let mut env = wxpush_testkit::TestEnv::new("ev_config2");
    env.set("WXPUSH_CONSENT_SOURCE", "events");
    let out = env.command(&["events"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("wxpush: WXPUSH_CONSENT_SOURCE is invalid: \"events\" needs a push_token"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // `wxpush events` with no app holding a push token does not start.
    let env = wxpush_testkit::TestEnv::new("ev_config3");
    let out = env.command(&["events"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no configured app has a push_token"), "{err}");

    // At trace, with good, forged and sealed pushes: neither secret in any output.
    let (mut f, events, metrics, log) =
        fleet_with("ev_trace", true, "events", &[("WXPUSH_LOG", "trace")]).await;
    let mut good = spec(events, PushKind::Popup, &user(6), &[(TPL, "accept")]);
    good.encoding_aes_key = Some(AES_KEY.into());
    good.format = PushFormat::Xml;
    assert_eq!(push_event(&good).await.unwrap().statuses, [200]);
    let mut forged = good.clone();
    forged.sign_with = Some("n0tTheToken".into());
    assert_eq!(push_event(&forged).await.unwrap().statuses, [403]);
    let (_, page) = http_get(metrics, "/metrics").await.unwrap();
    f.stop_all();
    let text = log.text();
    assert!(text.contains("serving WeChat's message push"), "{text}");
    for (what, secret) in [("the token", TOKEN), ("the key", AES_KEY)] {
        assert!(!text.contains(secret), "{what} in the log");
        assert!(!page.contains(secret), "{what} in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_applies_an_event_once_and_marks_it_in_the_same_script() {
    use std::collections::BTreeMap;
    use wxpush_bank::EventApplied;
    let env = wxpush_testkit::TestEnv::new("ev_bank");
    let deps = env.deps().await;
    let (bank, app) = (&deps.bank, &env.app);
    let who = OpenId::new(&user(7)).unwrap();
    let accepts = BTreeMap::from([(TPL, 1u64), (TPL_B, 2u64)]);
    assert_eq!(
        bank.event_add_consents(app, &who, "100:popup", &accepts)
            .await
            .unwrap(),
        EventApplied::Applied { changed: 3 }
    );
    assert_eq!(
        bank.event_add_consents(app, &who, "100:popup", &accepts)
            .await
            .unwrap(),
        EventApplied::Repeated
    );
    // Another event of the same user is another change.
    assert_eq!(
        bank.event_add_consents(app, &who, "101:popup", &accepts)
            .await
            .unwrap(),
        EventApplied::Applied { changed: 3 }
    );
    assert_eq!(bank.consents_left(app, &who, TPL_B).await.unwrap(), 4);
    assert_eq!(
        bank.event_clear_consents(app, &who, "102:change", TPL_B)
            .await
            .unwrap(),
        EventApplied::Applied { changed: 4 }
    );
    assert_eq!(
        bank.event_clear_consents(app, &who, "102:change", TPL_B)
            .await
            .unwrap(),
        EventApplied::Repeated
    );
    assert_eq!(bank.consents_left(app, &who, TPL).await.unwrap(), 2);
    // The marks live at least the contract's 10 minutes, and not for ever.
    let mut conn = redis::Client::open(wxpush_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(bank.keys().event_mark(app, &who, "100:popup"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((600..=3600).contains(&ttl), "{ttl}");
    // A bad template is refused before anything is sent.
    let bad = BTreeMap::from([("TPL BAD", 1u64)]);
    assert!(bank
        .event_add_consents(app, &who, "103:popup", &bad)
        .await
        .is_err());
    assert!(bank.remember_push_nonce(app, "n-1").await.unwrap());
    assert!(!bank.remember_push_nonce(app, "n-1").await.unwrap());
    bank.forget_push_nonce(app, "n-1").await.unwrap();
    assert!(bank.remember_push_nonce(app, "n-1").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wxpush_all_serves_the_message_push_when_an_app_has_a_push_token() {
    let mut f = Fleet::new("ev_all", 100_000, 100).await;
    f.env.set("WXPUSH_PUSH_TOKEN", TOKEN);
    let events = free_addr();
    f.start_with("all", &[("WXPUSH_EVENTS_ADDR", &events.to_string())]);
    let (t, n) = (now(), "9090");
    let sig = signature(&[TOKEN, &t, n]);
    let check = format!("/wechat/{TEST_APP}?signature={sig}&timestamp={t}&nonce={n}&echostr=hi");
    let answered = eventually(Duration::from_secs(30), || async {
        http_get(events, &check).await == Some((200, "hi".into()))
    })
    .await;
    assert!(answered, "wxpush all answers the server check");
    f.stop_all();
}

/// A subscribe message's delivery, reported by WeChat's `subscribe_msg_sent_event`, becomes a
/// `delivered` receipt (matched by msgid, published by the events process); a push WeChat
/// retries adds none; a msgid nobody asked receipts for adds none; `wxpush message status`
/// shows the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_event_becomes_one_delivered_receipt() {
    let (mut f, events, metrics) = fleet("ev_sent", true, "events").await;
    let tap = f.tap_receipts().await;
    let who = f.consent_users(0, 1, TPL, 1).await.remove(0);
    f.start("send");
    f.publish_messages(&[serde_json::json!({"messageId": "ship-1", "openId": who,
        "kind": "subscribe", "templateId": TPL, "data": {"thing1": "Shipped"}})])
        .await;
    let sent = std::sync::Mutex::new(Vec::new());
    let got = eventually(Duration::from_secs(30), || async {
        let more = tap.take().await;
        let mut sent = sent.lock().unwrap();
        sent.extend(more);
        !sent.is_empty()
    })
    .await;
    let sent = sent.into_inner().unwrap();
    assert!(got, "the send's receipt");
    let msgid = sent[0].1["msgid"].as_i64().expect("a msgid");
    // WeChat reports the delivery, three times (it retries a push it got no answer for), and
    // another msgid nobody asked receipts for.
    let mut s = spec(events, PushKind::Sent, &who, &[]);
    s.encoding_aes_key = Some(AES_KEY.into());
    s.items = vec![
        PushItem {
            template_id: TPL.into(),
            msg_id: Some(msgid.to_string()),
            error_code: Some(0),
            ..PushItem::default()
        },
        PushItem {
            template_id: TPL.into(),
            msg_id: Some("777".into()),
            error_code: Some(0),
            ..PushItem::default()
        },
    ];
    s.times = 3;
    let report = push_event(&s).await.unwrap();
    assert!(report.statuses.iter().all(|c| *c == 200), "{report:?}");
    let receipts = std::sync::Mutex::new(Vec::new());
    eventually(Duration::from_secs(20), || async {
        let more = tap.take().await;
        let mut r = receipts.lock().unwrap();
        r.extend(more);
        !r.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut receipts = receipts.into_inner().unwrap();
    receipts.extend(tap.take().await);
    assert_eq!(receipts.len(), 1, "one delivered receipt: {receipts:?}");
    assert_eq!(receipts[0].0, "message.delivered");
    assert_eq!(receipts[0].1["messageId"], "ship-1");
    assert_eq!(receipts[0].1["msgid"], msgid);
    let matched = metric(
        metrics,
        "wxpush_event_deliveries_total",
        "outcome=\"delivered\",matched=\"yes\"",
    )
    .await;
    let unmatched = metric(
        metrics,
        "wxpush_event_deliveries_total",
        "outcome=\"delivered\",matched=\"no\"",
    )
    .await;
    assert_eq!(matched, 1, "the msgid matched once");
    assert!(
        unmatched >= 3,
        "the retries and the other msgid: {unmatched}"
    );
    let out = wxpush_testkit::run(&f.env, &["message", "status", "ship-1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "sent");
    assert_eq!(v["delivery"]["outcome"], "delivered");
    f.stop_all();
}
