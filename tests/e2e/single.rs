//! Single messages (contract 8.2) end to end: published to `<ns>.messages`, consumed by the real
//! `wxpush send` processes directly (no dispatcher), against the fake WeChat, which counts what
//! it delivered: at most one WeChat message per messageId and app under republishing,
//! redelivery, lost replies and a SIGKILLed sender; bad messages dead-lettered with their reason.

use std::time::Duration;

use serde_json::{json, Value};
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{Fleet, TPL};

fn template_message(id: &str, who: &str) -> Value {
    json!({"messageId": id, "openId": who, "kind": "template", "templateId": TPL,
           "keywords": [format!("Order {id}"), "Tap to track it"]})
}

/// Deliveries WeChat carried out (a lost reply included).
fn delivered(f: &Fleet) -> u64 {
    f.delivered_per_user().values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_is_sent_once_however_often_it_is_published() {
    let mut f = Fleet::new("single_once", 100_000, 100).await;
    let users = f.users(0, 20, 3).await;
    let subscribers = f.consent_users(100, 5, "TPL_ORDER_SHIPPED", 2).await;
    f.start("send");
    f.start("send");
    let mut messages: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, who)| template_message(&format!("order-{i}"), who))
        .collect();
    messages.extend(subscribers.iter().enumerate().map(|(i, who)| {
        json!({"messageId": format!("ship-{i}"), "openId": who, "kind": "subscribe",
               "templateId": "TPL_ORDER_SHIPPED",
               "data": {"thing1": {"value": format!("Order {i} shipped")}}})
    }));
    // Everything twice, and again once the first copies are through.
    f.publish_messages(&messages).await;
    f.publish_messages(&messages).await;
    let all = eventually(Duration::from_secs(60), || async { delivered(&f) >= 25 }).await;
    assert!(all, "delivered {}", delivered(&f));
    f.publish_messages(&messages).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_user = f.delivered_per_user();
    assert_eq!(per_user.len(), 25);
    assert!(per_user.values().all(|&n| n == 1), "{per_user:?}");
    for s in &subscribers {
        let left = f
            .fake
            .fake()
            .consents_left(None, s, "TPL_ORDER_SHIPPED")
            .unwrap();
        assert_eq!(left, 1, "one consent spent, not two");
    }
    // Each template message carried its own data.
    for r in f.fake.requests().iter().filter(|r| r.delivered) {
        let who = r.touser.clone().unwrap_or_default();
        if let Some(i) = users.iter().position(|u| *u == who) {
            let data = r.data.clone().unwrap_or(Value::Null);
            assert_eq!(data["keyword1"]["value"], json!(format!("Order order-{i}")));
        }
    }
    // No campaign record, and one set of counters per app and shard, not one per message.
    let counted: u64 = f.counts(&wxpush_domain::SINGLE_MARK.to_string()).await["sent"];
    assert_eq!(counted, 25);
    assert!(f.record("order-1").await.is_empty(), "no campaign record");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_and_a_killed_sender_still_send_each_message_once() {
    let mut f = Fleet::new("single_faults", 100_000, 100).await;
    let users = f.users(0, 60, 3).await;
    f.fake
        .update_faults(|x| {
            x.latency_ms = 300;
            x.lost_reply_probability = 0.2;
        })
        .unwrap();
    let victim = f.start("send");
    f.start("send");
    let messages: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, who)| template_message(&format!("m-{i}"), who))
        .collect();
    f.publish_messages(&messages).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.kill(victim);
    f.start("send");
    f.publish_messages(&messages[..30]).await;
    let all = eventually(Duration::from_secs(120), || async { delivered(&f) >= 60 }).await;
    assert!(all, "delivered {}", delivered(&f));
    f.fake
        .update_faults(|x| {
            x.latency_ms = 0;
            x.lost_reply_probability = 0.0;
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_user = f.delivered_per_user();
    assert_eq!(per_user.len(), 60);
    assert!(
        per_user.values().all(|&n| n == 1),
        "a user got two: {:?}",
        per_user.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_message_is_dead_lettered_with_its_reason_and_the_rest_go_on() {
    let mut f = Fleet::new("single_bad", 100_000, 100).await;
    let users = f.users(0, 2, 1).await;
    f.start("send");
    f.publish_messages(&[
        json!({"openId": users[0], "kind": "template", "templateId": TPL}),
        json!({"messageId": "no-kind", "openId": users[0], "templateId": TPL}),
        json!({"messageId": "bad-data", "openId": users[0], "kind": "subscribe",
               "templateId": "TPL_ORDER_SHIPPED", "data": {"thing1": "x".repeat(30)}}),
        template_message("good", &users[1]),
    ])
    .await;
    let seen = std::sync::Mutex::new(Vec::new());
    let dead = eventually(Duration::from_secs(30), || async {
        let got = f.env.drain_dead_letters(&f.deps.broker, "messages").await;
        let mut seen = seen.lock().unwrap();
        seen.extend(got.into_iter().map(|(_, code, _)| code));
        seen.len() >= 3
    })
    .await;
    let mut codes = seen.into_inner().unwrap();
    codes.sort();
    assert!(dead, "{codes:?}");
    assert_eq!(
        codes,
        ["invalid_data", "missing_kind", "missing_message_id"]
    );
    let sent = eventually(Duration::from_secs(30), || async { delivered(&f) == 1 }).await;
    assert!(sent);
    assert_eq!(f.delivered_per_user().get(&users[1]), Some(&1));
    // The same messageId for another user: refused, nothing sent (one message per messageId).
    f.publish_messages(&[template_message("good", &users[0])])
        .await;
    let seen = std::sync::Mutex::new(Vec::new());
    let reused = eventually(Duration::from_secs(30), || async {
        let got = f.env.drain_dead_letters(&f.deps.broker, "messages").await;
        let mut seen = seen.lock().unwrap();
        seen.extend(got.into_iter().map(|(_, code, _)| code));
        seen.iter().any(|c| c == "message_id_reused")
    })
    .await;
    assert!(reused);
    assert_eq!(f.delivered_per_user().get(&users[0]), None);
    let status = wxpush_testkit::run(&f.env, &["message", "status", "good", "--json"]);
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["openId"], json!(users[1]), "bound to its first user");
    f.stop_all();
}
