//! Campaigns whose recipients carry data of their own, and campaigns sent in parts (contract
//! 8.1), end to end: the real `wxpush dispatch` and `wxpush send` processes against the fake
//! WeChat, which records the data each send carried.
//! - each user's message carries that user's values laid over the campaign's;
//! - a recipient whose own data breaks WeChat's limits is recorded `invalid_data` without a
//!   call, spending nothing, and the others go on;
//! - a campaign in three parts, one part published twice and one arriving late, counts all its
//!   parts and reaches each user once.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use wxpush_domain::OpenId;
use wxpush_fake_wechat::Endpoint;
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{Fleet, TPL};

const ORDER: &str = "TPL_ORDER_SHIPPED";

/// The data of each send WeChat accepted, per user.
fn data_per_user(f: &Fleet, endpoint: Endpoint) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for r in f.fake.requests() {
        if r.endpoint == endpoint && r.errcode == Some(0) {
            m.entry(r.touser.unwrap_or_default())
                .or_default()
                .push(r.data.unwrap_or(Value::Null));
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_sees_their_own_values_and_one_bad_recipient_stops_nobody() {
    let mut f = Fleet::new("personal_sub", 100_000, 7).await;
    let users = f.consent_users(0, 20, ORDER, 1).await;
    f.start("dispatch");
    f.start("send");
    // User 3's own thing1 is over WeChat's 20 characters: refused for them alone.
    let recipients: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, who)| {
            let mut r = json!({"openId": who,
                               "data": {"character_string2": {"value": format!("SF{i:04}")}},
                               "page": format!("pages/order/detail?id={i}")});
            if i == 3 {
                r["data"]["thing1"] = json!({"value": "x".repeat(21)});
            }
            r
        })
        .collect();
    f.publish_campaign(json!({
        "campaignId": "personal-sub-1", "kind": "subscribe", "templateId": ORDER,
        "data": {"thing1": {"value": "Your order shipped"}},
        "audience": {"recipients": recipients}}))
        .await;
    f.wait_complete("personal-sub-1", Duration::from_secs(60))
        .await;

    let got = data_per_user(&f, Endpoint::SubscribeSend);
    assert_eq!(got.len(), 19, "everyone but the bad recipient: {got:?}");
    for (i, who) in users.iter().enumerate() {
        if i == 3 {
            assert!(!got.contains_key(who), "no call for the refused recipient");
            continue;
        }
        let sends = &got[who];
        assert_eq!(sends.len(), 1, "one message each");
        assert_eq!(
            sends[0],
            json!({"thing1": {"value": "Your order shipped"},
                   "character_string2": {"value": format!("SF{i:04}")}}),
            "the campaign's field and the user's own"
        );
    }
    let c = f.counts("personal-sub-1").await;
    assert_eq!(c.get("sent"), Some(&19), "{c:?}");
    assert_eq!(c.get("invalid_data"), Some(&1), "{c:?}");
    assert_eq!(f.snapshot("personal-sub-1").await.targeted(), Some(20));
    let left = f
        .deps
        .bank
        .consents_left(&f.env.app, &OpenId::new(&users[3]).unwrap(), ORDER)
        .await
        .unwrap();
    assert_eq!(left, 1, "the refused recipient's consent is untouched");
    // Its record keeps no recipient's data: `campaign retry` says so rather than sending the
    // campaign's data alone.
    let retry = wxpush_testkit::run(&f.env, &["campaign", "retry", "personal-sub-1"]);
    assert!(!retry.status.success());
    let err = wxpush_testkit::stderr(&retry);
    assert!(err.contains("cannot be retried from the record"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_recipients_replace_keywords_by_position() {
    let mut f = Fleet::new("personal_tpl", 100_000, 5).await;
    let users = f.users(0, 12, 1).await;
    f.start("dispatch");
    f.start("send");
    let recipients: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, who)| match i {
            // 65 keywords: over the limit of 64 fields.
            5 => json!({"openId": who, "keywords": vec!["k"; 65]}),
            // The recipient's data is not an object.
            6 => json!({"openId": who, "data": 5}),
            _ => json!({"openId": who, "keywords": [format!("Order {i}")]}),
        })
        .collect();
    f.publish_campaign(json!({
        "campaignId": "personal-tpl-1", "templateId": TPL,
        "keywords": ["Your order", "Tap to track it"],
        "audience": {"recipients": recipients}}))
        .await;
    f.wait_complete("personal-tpl-1", Duration::from_secs(60))
        .await;
    let got = data_per_user(&f, Endpoint::TemplateSend);
    assert_eq!(got.len(), 10, "{got:?}");
    for (i, who) in users.iter().enumerate() {
        if i == 5 || i == 6 {
            assert!(!got.contains_key(who));
            continue;
        }
        assert_eq!(
            got[who],
            vec![json!({"keyword1": {"value": format!("Order {i}")},
                        "keyword2": {"value": "Tap to track it"}})]
        );
    }
    let c = f.counts("personal-tpl-1").await;
    assert_eq!(c.get("invalid_data"), Some(&2), "{c:?}");
    assert_eq!(c.get("sent"), Some(&10), "{c:?}");
    for who in [&users[5], &users[6]] {
        let held = f
            .deps
            .bank
            .usable_count(&f.env.app, &OpenId::new(who).unwrap())
            .await
            .unwrap();
        assert_eq!(held, 1, "a refused recipient's formId is not spent");
    }
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_in_parts_counts_every_part_and_reaches_each_user_once() {
    let mut f = Fleet::new("personal_parts", 100_000, 4).await;
    let users = f.users(0, 30, 1).await;
    f.start("dispatch");
    f.start("dispatch");
    f.start("send");
    f.start("send");
    let part = |k: usize| {
        let recipients: Vec<Value> = users[(k - 1) * 10..k * 10]
            .iter()
            .map(|who| json!({"openId": who, "keywords": [format!("Hello {who}")]}))
            .collect();
        json!({"campaignId": "parts-1", "templateId": TPL, "keywords": ["x", "y"],
               "audience": {"recipients": recipients}, "part": k, "parts": 3})
    };
    // Part 2 twice, part 3 held back.
    f.publish_campaign(part(1)).await;
    f.publish_campaign(part(2)).await;
    f.publish_campaign(part(2)).await;
    let two_parts = eventually(Duration::from_secs(60), || async {
        let r = f.snapshot("parts-1").await;
        r.parts() == Some((2, 2, 3)) && f.finished("parts-1").await >= 20
    })
    .await;
    let r = f.snapshot("parts-1").await;
    assert!(two_parts, "{r:?}");
    assert!(!r.is_dispatched(), "not dispatched while a part is missing");
    assert_eq!(r.targeted(), Some(20), "each part counted once: {r:?}");
    let status = wxpush_testkit::run(&f.env, &["campaign", "status", "parts-1", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(
        status["parts"],
        json!({"received": 2, "dispatched": 2, "total": 3})
    );
    assert_eq!(status["complete"], json!(false));

    f.publish_campaign(part(3)).await;
    f.wait_complete("parts-1", Duration::from_secs(60)).await;
    f.check("parts-1", &users, 30).await;
    let got = data_per_user(&f, Endpoint::TemplateSend);
    for who in &users {
        assert_eq!(
            got[who][0]["keyword1"]["value"],
            json!(format!("Hello {who}"))
        );
    }
    // A part that disagrees with the others (another number of parts) is refused.
    let mut odd = part(1);
    odd["parts"] = json!(4);
    f.publish_campaign(odd).await;
    let seen = std::sync::Mutex::new(Vec::new());
    let refused = eventually(Duration::from_secs(30), || async {
        let got = f.env.drain_dead_letters(&f.deps.broker, "dispatch").await;
        let mut seen = seen.lock().unwrap();
        seen.extend(got.into_iter().map(|(_, code, _)| code));
        seen.iter().any(|c| c == "part_conflict")
    })
    .await;
    assert!(refused, "a disagreeing part is refused");
    // A part again after the end: nothing new.
    f.publish_campaign(part(1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.snapshot("parts-1").await.targeted(), Some(30));
    assert_eq!(f.accepted_per_user().values().sum::<u64>(), 30);
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_of_a_campaign_sent_whole_is_dead_lettered() {
    let mut f = Fleet::new("personal_conflict", 100_000, 10).await;
    let users = f.users(0, 3, 1).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(wxpush_testkit::fleet::campaign(
        "whole-1",
        json!({"openIds": users}),
    ))
    .await;
    f.wait_complete("whole-1", Duration::from_secs(60)).await;
    let mut part = wxpush_testkit::fleet::campaign("whole-1", json!({"openIds": users}));
    part["part"] = json!(1);
    part["parts"] = json!(2);
    f.publish_campaign(part).await;
    let seen = std::sync::Mutex::new(Vec::new());
    let dead = eventually(Duration::from_secs(30), || async {
        let got = f.env.drain_dead_letters(&f.deps.broker, "dispatch").await;
        let mut seen = seen.lock().unwrap();
        seen.extend(got.into_iter().map(|(_, code, _)| code));
        seen.iter().any(|c| c == "part_conflict")
    })
    .await;
    assert!(dead, "the part is refused with its reason");
    assert_eq!(f.accepted_per_user().values().sum::<u64>(), 3);
    f.stop_all();
}
