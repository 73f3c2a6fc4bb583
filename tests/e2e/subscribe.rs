//! Subscribe-message campaigns end to end: consents uploaded through the real `wxpush ingest`
//! (the object `wx.requestSubscribeMessage` returns), spent by the real `wxpush dispatch` and
//! `wxpush send` processes, against the fake WeChat, which holds its own consents and answers
//! `43101` when none is left and `47003` for refused data.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use wxpush_domain::OpenId;
use wxpush_fake_wechat::Endpoint;
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::Fleet;

const SUB: &str = "TPL_ORDER_SHIPPED";
const OTHER: &str = "TPL_SIGNIN_REMINDER";

fn user(n: usize) -> String {
    format!("oSub{n:06}xxxxxxxxxxxxxxxxxx")
}

fn subscribe_campaign(id: &str, audience: serde_json::Value) -> serde_json::Value {
    json!({"campaignId": id, "kind": "subscribe", "templateId": SUB,
           "page": "pages/order/detail?id=1",
           "data": {"thing1": {"value": "Your order shipped"},
                    "character_string2": {"value": "SF1234567"}},
           "miniprogramState": "formal", "lang": "zh_CN", "audience": audience})
}

/// Users `0..n`, each accepting `SUB` `per` times and `OTHER` once (and rejecting a third
/// template), uploaded through ingest; the fake WeChat grants it the consents in `fake_per`.
async fn consenting_users(f: &Fleet, n: usize, per: usize, fake_per: u32) -> Vec<String> {
    let fake = f.fake.fake();
    fake.add_template(None, SUB).unwrap();
    fake.add_template(None, OTHER).unwrap();
    let mut bodies = Vec::new();
    let mut users = Vec::new();
    for u in 0..n {
        let who = user(u);
        fake.register_user(None, &who).unwrap();
        if fake_per > 0 {
            fake.grant_consents(None, &who, SUB, fake_per).unwrap();
        }
        fake.grant_consents(None, &who, OTHER, 1).unwrap();
        for i in 0..per {
            let mut subs = json!({"errMsg": "requestSubscribeMessage:ok", SUB: "accept",
                                  "TPL_NEVER": "reject"});
            if i == 0 {
                subs[OTHER] = json!("accept");
            }
            bodies.push(
                json!({"openId": who, "subscriptions": subs})
                    .to_string()
                    .into_bytes(),
            );
        }
        users.push(who);
    }
    f.env.declare_ingest(&f.deps.broker).await;
    f.env.publish_uploads(&f.deps.broker, &bodies).await;
    let stored = eventually(Duration::from_secs(30), || async {
        for who in &users {
            if consents(f, who, SUB).await < per as u64 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(stored, "every consent stored");
    users
}

async fn consents(f: &Fleet, who: &str, template: &str) -> u64 {
    f.deps
        .bank
        .consents_left(&f.env.app, &OpenId::new(who).unwrap(), template)
        .await
        .unwrap_or(0)
}

/// Subscribe messages WeChat accepted, per user.
fn delivered(f: &Fleet) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for r in f.fake.requests() {
        if r.endpoint == Endpoint::SubscribeSend && r.errcode == Some(0) {
            *m.entry(r.touser.unwrap_or_default()).or_default() += 1;
        }
    }
    m
}

/// Calls to the subscribe API, whatever WeChat answered.
fn subscribe_calls(f: &Fleet) -> usize {
    f.fake
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::SubscribeSend)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_accumulate_and_are_spent_one_per_message_and_per_template() {
    let mut f = Fleet::new("sub_spend", 100_000, 100).await;
    f.start("ingest");
    let users = consenting_users(&f, 120, 2, 2).await;
    f.start("dispatch");
    f.start("send");
    f.start("send");

    f.publish_campaign(subscribe_campaign("sub-1", json!({"all": true})))
        .await;
    f.wait_complete("sub-1", Duration::from_secs(60)).await;
    let per_user = delivered(&f);
    assert_eq!(
        per_user.len(),
        120,
        "everyone holding a consent got one message"
    );
    assert!(per_user.values().all(|&n| n == 1), "nobody got two");
    for who in &users {
        assert_eq!(consents(&f, who, SUB).await, 1, "one of two consents spent");
        assert_eq!(
            consents(&f, who, OTHER).await,
            1,
            "another template is untouched"
        );
    }
    // The same campaign again: nothing new. A second campaign spends the second consent.
    f.publish_campaign(subscribe_campaign("sub-1", json!({"all": true})))
        .await;
    f.publish_campaign(subscribe_campaign("sub-2", json!({"openIds": users})))
        .await;
    f.wait_complete("sub-2", Duration::from_secs(60)).await;
    let per_user = delivered(&f);
    assert!(
        per_user.values().all(|&n| n == 2),
        "two campaigns, two messages each"
    );
    // No consent left: a third campaign reaches nobody, and says so.
    f.publish_campaign(subscribe_campaign("sub-3", json!({"openIds": users})))
        .await;
    f.wait_complete("sub-3", Duration::from_secs(60)).await;
    let c = f.counts("sub-3").await;
    assert_eq!(c.get("no_credential"), Some(&120), "{c:?}");
    assert_eq!(c.get("sent"), None, "{c:?}");
    for who in users.iter().take(5) {
        assert_eq!(
            f.fake.fake().consents_left(None, who, SUB).unwrap(),
            0,
            "WeChat's count agrees"
        );
    }
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_43101_clears_the_users_consents_for_that_template() {
    let mut f = Fleet::new("sub_43101", 100_000, 100).await;
    f.start("ingest");
    // The bank believes in 2 consents each; WeChat holds none for SUB.
    let users = consenting_users(&f, 30, 2, 0).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(subscribe_campaign("stale", json!({"all": true})))
        .await;
    f.wait_complete("stale", Duration::from_secs(60)).await;
    let c = f.counts("stale").await;
    assert_eq!(c.get("failed:43101"), Some(&30), "{c:?}");
    for who in &users {
        assert_eq!(consents(&f, who, SUB).await, 0, "stale consents cleared");
        assert_eq!(consents(&f, who, OTHER).await, 1, "only that template's");
    }
    // Nobody is left in the template's index: `all` now reaches no one.
    f.publish_campaign(subscribe_campaign("stale-2", json!({"all": true})))
        .await;
    f.wait_complete("stale-2", Duration::from_secs(30)).await;
    assert_eq!(
        f.snapshot("stale-2")
            .await
            .text(wxpush_bank::record::field::TARGETED),
        Some("0")
    );
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_data_stops_the_campaign_instead_of_failing_every_user() {
    let mut f = Fleet::new("sub_47003", 50, 100).await;
    f.start("ingest");
    let users = consenting_users(&f, 300, 1, 1).await;
    f.fake
        .update_faults(|x| x.refuse_subscribe_data = true)
        .unwrap();
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(subscribe_campaign("refused", json!({"all": true})))
        .await;
    let stopped = eventually(Duration::from_secs(30), || async {
        f.snapshot("refused").await.stopped_reason().is_some()
    })
    .await;
    assert!(stopped, "the campaign was stopped");
    // The queue drains without sending.
    let drained = eventually(Duration::from_secs(30), || async {
        f.env
            .queue_ready(&f.deps.broker, &f.env.topology().send_queue())
            .await
            == 0
    })
    .await;
    assert!(drained);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = subscribe_calls(&f);
    // The sender that hears 47003 stops at once: only sends already on their way to WeChat
    // go out (2 or 3 here at 50/s); one that only learnt of the stop from Redis, a second
    // later, made about 50.
    assert!(
        calls < 20,
        "{calls} calls to WeChat for 300 users: not stopped early"
    );
    let record = f.snapshot("refused").await;
    assert!(
        record.stopped_reason().is_some_and(|r| r.contains("47003")),
        "{record:?}"
    );
    // Consents WeChat refused to use are given back (once the jobs in flight are settled).
    let kept = || async {
        let mut n = 0;
        for who in &users {
            n += consents(&f, who, SUB).await;
        }
        n
    };
    assert!(
        eventually(Duration::from_secs(15), || async { kept().await == 300 }).await,
        "no consent was spent by a refused send: {} kept, {:?}",
        kept().await,
        f.counts("refused").await
    );
    let out = f
        .env
        .command(&["campaign", "status", "refused", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "stopped", "{status}");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_subscribe_send_is_recorded_unknown_and_never_resent() {
    use wxpush_roles::send::{self, SendParts, SendSettings};
    let mut f = Fleet::new("sub_unknown", 100_000, 100).await;
    f.start("ingest");
    let users = consenting_users(&f, 10, 2, 2).await;
    f.start("dispatch");
    // A sender in this process, whose WeChat client gives up after 400 ms; WeChat takes the
    // consent, then answers after 1.5 s.
    let config = f.env.config();
    let parts = SendParts::connect(&config, &f.deps, Duration::from_millis(400))
        .await
        .unwrap();
    parts.default_app().tokens.get().await.unwrap();
    f.fake.update_faults(|x| x.latency_ms = 1500).unwrap();
    let (trigger, shutdown) = wxpush_roles::ShutdownTrigger::new();
    let (deps, topo) = (f.deps.clone(), f.env.topology());
    let settings = SendSettings::from_config(&config);
    let role = tokio::spawn(async move {
        let health = wxpush_roles::Health::new();
        send::run(&deps, parts, &topo, &settings, &health, shutdown).await
    });
    f.publish_campaign(subscribe_campaign("ambiguous", json!({"all": true})))
        .await;
    f.wait_complete("ambiguous", Duration::from_secs(60)).await;
    trigger.trigger();
    role.await.unwrap().unwrap();
    let c = f.counts("ambiguous").await;
    assert_eq!(c.get("unknown"), Some(&10), "{c:?}");
    assert_eq!(c.get("retried"), None, "never retried: {c:?}");
    let calls = subscribe_calls(&f);
    assert_eq!(calls, 10, "one call per user, never a second");
    for who in &users {
        assert_eq!(
            delivered(&f).get(who),
            Some(&1),
            "WeChat did deliver it once"
        );
        assert_eq!(
            consents(&f, who, SUB).await,
            1,
            "the consent counts as spent"
        );
    }
    f.stop_all();
}
