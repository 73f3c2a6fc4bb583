//! Several mini programs in one install, end to end: two apps listed in a `WXPUSH_CONFIG` file
//! (the default one also named by `WXPUSH_APP_ID`, as a single-app install upgraded to a file
//! would), the real `wxpush` role processes, and the fake WeChat serving both apps, each with
//! its own secret, tokens, users, formIds and consents.
//!
//! The same openIds exist in both apps (they are different users there) and both apps run a
//! campaign of the same id, so anything one app took from the other would show: the fake
//! refuses a formId or consent spent with the other app's token, and each app's rate limit is
//! checked on the fake's own clock. The senders have few slots (`WXPUSH_SEND_CONCURRENCY=4`)
//! and A's campaign is queued first: B's campaigns finish while A's jobs still wait for A's
//! permits, because each app has a send queue of its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use wxpush_bank::record::{field, record_key};
use wxpush_domain::AppId;
use wxpush_fake_wechat::{Endpoint, FakeApp, FakeConfig, FakeWeChat, RequestRecord};
use wxpush_testkit::fleet::{campaign, Fleet, TPL};
use wxpush_testkit::{campaign_counts, eventually, now_ms, TestEnv, TEST_APP};

const B: &str = "wxfedcba0987654321";
const SECRET_A: &str = "secret-of-app-a";
const SECRET_B: &str = "secret-of-app-b";
const SUB: &str = "TPL_ORDER_SHIPPED";
/// App A's own send ceiling, low enough to measure; B's is WXPUSH_SEND_RATE's.
const RATE_A: u32 = 4;
const USERS: usize = 20;

fn user(n: usize) -> String {
    format!("oApps{n:06}xxxxxxxxxxxxxxxxxx")
}

/// The install's apps file: A (the default, through WXPUSH_APP_ID) with its own rate, and B.
fn write_config(env: &TestEnv) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", env.ns));
    std::fs::write(
        &path,
        format!(
            "# two mini programs\n\
             [[apps]]\nappid = \"{TEST_APP}\"\nsecret = \"{SECRET_A}\"\nsend_rate = {RATE_A}\n\n\
             [[apps]]\nappid = \"{B}\"\nsecret = \"{SECRET_B}\"\n"
        ),
    )
    .expect("write the apps file");
    path
}

/// Removes the apps file when dropped: declared before the fleet, it outlives the fleet's
/// clean-up, which reads it to find every app's queues.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Largest number of records within any `window_ms`.
fn busiest(records: &[&RequestRecord], window_ms: u64) -> usize {
    let times: Vec<u64> = records.iter().map(|r| r.at_ms).collect();
    let mut best = 0;
    for (i, start) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|t| **t < start + window_ms)
            .count();
        best = best.max(n);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_never_share_tokens_credentials_or_rate_limits() {
    let mut env = TestEnv::new("apps");
    let fake = FakeWeChat::start(FakeConfig::with_apps(vec![
        FakeApp::new(TEST_APP, SECRET_A).with_templates([TPL]),
        FakeApp::new(B, SECRET_B).with_templates([TPL, SUB]),
    ]))
    .await
    .unwrap();
    let file = RemoveOnDrop(write_config(&env));
    env.set("WXPUSH_CONFIG", &file.0.to_string_lossy());
    env.set("WXPUSH_SEND_CONCURRENCY", "4");
    env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
    env.set("WXPUSH_SEND_RATE", "1000");
    env.set("WXPUSH_LOG", "warn");
    let deps = env.deps().await;
    let mut f = Fleet {
        env,
        fake,
        deps,
        children: Vec::new(),
    };
    let (a, b) = (AppId::new(TEST_APP).unwrap(), AppId::new(B).unwrap());
    let wechat = f.fake.fake().clone();

    // Every user exists in both apps: one formId from A; two formIds and a consent from B.
    // Uploads without an appId are the default app's (A).
    let expire = now_ms() + 3_600_000;
    let mut owner_of: HashMap<String, &str> = HashMap::new();
    let mut bodies = Vec::new();
    for u in 0..USERS {
        let who = user(u);
        wechat.grant_consents(Some(B), &who, SUB, 1).unwrap();
        let mut entries = |app: &'static str, n: usize| {
            let ids = wechat.issue_form_ids(Some(app), &who, n, None).unwrap();
            ids.into_iter()
                .map(|id| {
                    owner_of.insert(id.clone(), app);
                    json!({"formId": id, "expire": expire})
                })
                .collect::<Vec<_>>()
        };
        let (of_a, of_b) = (entries(TEST_APP, 1), entries(B, 2));
        bodies.push(json!({"openId": who, "formIds": of_a}));
        bodies.push(json!({"openId": who, "appId": B, "formIds": of_b,
                           "subscriptions": {"errMsg": "requestSubscribeMessage:ok", SUB: "accept"}}));
    }
    // An app this install does not serve: dead-lettered, never stored under another app.
    bodies.push(json!({"openId": user(0), "appId": "wxnotserved", "formIds": [{"formId": "f1"}]}));
    let bodies: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_string().into_bytes()).collect();
    f.env.declare_ingest(&f.deps.broker).await;
    f.env.publish_uploads(&f.deps.broker, &bodies).await;

    f.start("ingest");
    f.start("dispatch");
    f.start("send");
    f.start("send");
    let bank = f.deps.bank.clone();
    let stored = eventually(Duration::from_secs(30), || async {
        let (mut ca, mut cb) = (0, 0);
        for u in 0..USERS {
            let who = wxpush_domain::OpenId::new(&user(u)).unwrap();
            ca += bank.usable_count(&a, &who).await.unwrap_or(0);
            cb += bank.usable_count(&b, &who).await.unwrap_or(0);
        }
        (ca, cb) == (USERS as u64, 2 * USERS as u64)
    })
    .await;
    assert!(stored, "every upload stored under its own app");

    // The same campaign id in both apps, and a subscribe campaign in B.
    let everyone = json!({"all": true});
    f.publish_campaign(campaign("same-id", everyone.clone()))
        .await;
    let mut in_b = campaign("same-id", everyone.clone());
    in_b["appId"] = json!(B);
    f.publish_campaign(in_b).await;
    f.publish_campaign(
        json!({"campaignId": "b-sub", "appId": B, "kind": "subscribe",
        "templateId": SUB, "data": {"thing1": {"value": "Shipped"}}, "audience": everyone}),
    )
    .await;
    let mut elsewhere = campaign("elsewhere", json!({"openIds": [user(0)]}));
    elsewhere["appId"] = json!("wxnotserved");
    f.publish_campaign(elsewhere).await;

    let counts = |app: AppId, id: &'static str| {
        let bank = bank.clone();
        async move { campaign_counts(&bank, &app, id).await }
    };
    // Every recipient with an outcome (retries and duplicate jobs are not outcomes).
    let finished = |c: BTreeMap<String, u64>| -> u64 {
        c.iter()
            .filter(|(k, _)| *k != "retried" && *k != "duplicate")
            .map(|(_, v)| v)
            .sum()
    };
    let campaigns = [(&a, "same-id"), (&b, "same-id"), (&b, "b-sub")];
    let done = eventually(Duration::from_secs(60), || async {
        for (app, id) in campaigns {
            if finished(counts(app.clone(), id).await) < USERS as u64 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(done, "the three campaigns did not finish");
    for (app, id) in campaigns {
        let c = counts(app.clone(), id).await;
        assert_eq!(c.get("sent"), Some(&(USERS as u64)), "{app} {id}: {c:?}");
    }
    f.stop_all();

    // Each app's campaign is recorded under its own app; nothing else was recorded.
    for (app, id, kind) in [
        (&a, "same-id", "template"),
        (&b, "same-id", "template"),
        (&b, "b-sub", "subscribe"),
    ] {
        let r = f.hash(record_key(&f.env.ns, app, id)).await;
        assert_eq!(
            r.get(field::APP).map(String::as_str),
            Some(app.as_str()),
            "{r:?}"
        );
        assert_eq!(r.get(field::KIND).map(String::as_str), Some(kind), "{r:?}");
        assert_eq!(
            r.get(field::TARGETED).map(String::as_str),
            Some("20"),
            "{r:?}"
        );
    }
    assert_eq!(counts(a.clone(), "b-sub").await, BTreeMap::new());

    // Credentials: every accepted send spent a credential of its own app (the fake refuses
    // any other: no send was refused at all), each user once per campaign.
    let requests = wechat.requests();
    let sends: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| matches!(r.endpoint, Endpoint::TemplateSend | Endpoint::SubscribeSend))
        .collect();
    let refused: Vec<_> = sends.iter().filter(|r| r.errcode != Some(0)).collect();
    assert!(refused.is_empty(), "sends refused: {refused:?}");
    let mut per: HashMap<(String, Endpoint), HashSet<String>> = HashMap::new();
    for r in &sends {
        let app = r.app_id.clone().expect("the fake knows every token's app");
        if let Some(id) = &r.form_id {
            assert_eq!(owner_of.get(id).copied(), Some(app.as_str()), "{r:?}");
        }
        let who = r.touser.clone().unwrap_or_default();
        assert!(
            per.entry((app, r.endpoint)).or_default().insert(who),
            "{r:?} twice"
        );
    }
    for key in [
        (TEST_APP.to_owned(), Endpoint::TemplateSend),
        (B.to_owned(), Endpoint::TemplateSend),
        (B.to_owned(), Endpoint::SubscribeSend),
    ] {
        assert_eq!(per.get(&key).map(HashSet::len), Some(USERS), "{key:?}");
    }
    assert_eq!(per.len(), 3, "{:?}", per.keys().collect::<Vec<_>>());
    // B's second formIds and A's nothing are left; B's consents are spent.
    for u in 0..USERS {
        let who = wxpush_domain::OpenId::new(&user(u)).unwrap();
        assert_eq!(bank.usable_count(&a, &who).await.unwrap(), 0);
        assert_eq!(bank.usable_count(&b, &who).await.unwrap(), 1);
        assert_eq!(bank.consents_left(&b, &who, SUB).await.unwrap(), 0);
        assert_eq!(
            wechat
                .consents_left(Some(B), &who.to_string(), SUB)
                .unwrap(),
            0
        );
    }

    // Tokens: each app fetched its own (the fake answers a token only to its app's secret).
    let fetched: BTreeMap<String, usize> = requests
        .iter()
        .filter(|r| matches!(r.endpoint, Endpoint::Token | Endpoint::StableToken))
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.app_id.clone().unwrap_or_default()).or_default() += 1;
            m
        });
    assert_eq!(
        fetched.keys().map(String::as_str).collect::<Vec<_>>(),
        [B, TEST_APP],
        "{fetched:?}"
    );

    // Rate limits, on the fake's clock: A's sends keep to A's 4/s over their whole span (the
    // limiter's bound: rate × span + its one-permit bucket); B's ran far faster than A's limit.
    let of = |app: &str| -> Vec<&RequestRecord> {
        let mut v: Vec<&RequestRecord> = sends
            .iter()
            .copied()
            .filter(|r| r.app_id.as_deref() == Some(app))
            .collect();
        v.sort_by_key(|r| r.at_ms);
        v
    };
    let (sends_a, sends_b) = (of(TEST_APP), of(B));
    let span_a = sends_a[USERS - 1].at_ms - sends_a[0].at_ms;
    let allowed = u64::from(RATE_A) * span_a / 1000 + 2;
    assert!(
        sends_a.len() as u64 <= allowed,
        "{} sends of A in {span_a} ms: A's rate is {RATE_A}/s",
        sends_a.len()
    );
    let peak_b = busiest(&sends_b, 1000);
    assert!(
        peak_b > 3 * RATE_A as usize,
        "B sent at most {peak_b} in a second: it is held to A's limit"
    );
    // No head-of-line blocking: B's jobs, queued after all of A's, were all sent before A's
    // tenth (A's jobs fill every slot of the senders' default queue while they wait).
    let b_done = sends_b[sends_b.len() - 1].at_ms;
    assert!(
        b_done < sends_a[9].at_ms,
        "B finished {} ms after A's first send, A's tenth went at {} ms",
        b_done - sends_a[0].at_ms,
        sends_a[9].at_ms - sends_a[0].at_ms
    );
    eprintln!(
        "A: {} sends in {span_a} ms (limit {RATE_A}/s); B: {} sends, up to {peak_b} in one \
         second, all done {} ms after A's first send (A's tenth: {} ms)",
        sends_a.len(),
        sends_b.len(),
        b_done.saturating_sub(sends_a[0].at_ms),
        sends_a[9].at_ms - sends_a[0].at_ms
    );

    // What named an app not served is dead-lettered with that reason, by ingest and dispatch.
    for source in ["ingest", "dispatch"] {
        let dead = f.env.drain_dead_letters(&f.deps.broker, source).await;
        let codes: Vec<&str> = dead.iter().map(|(_, code, _)| code.as_str()).collect();
        assert_eq!(codes, ["unknown_app"], "{source}: {dead:?}");
    }
}
