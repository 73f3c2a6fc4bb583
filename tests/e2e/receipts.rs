//! Receipts (contract 8.3) end to end: the real `wxpush send` processes publish one receipt per
//! outcome of every single message, and of every recipient of a campaign that asks, to
//! `<ns>.receipts` (routing key `<message|campaign>.<outcome>`), at least once, and only once
//! the outcome is settled in Redis (the settling script writes the receipt into an outbox,
//! which is published and then emptied). A receipt whose process died between its settle and
//! its publish is published by the fleet's sweep.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use wxpush_bank::Receipt;
use wxpush_domain::OpenId;
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{Fleet, ReceiptTap, TPL};

/// Receipts gathered until `done` says so (or the guard runs out).
async fn gather(
    tap: &ReceiptTap,
    guard: Duration,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let got = std::sync::Mutex::new(Vec::new());
    eventually(guard, || async {
        let more = tap.take().await;
        let mut got = got.lock().unwrap();
        got.extend(more);
        done(&got)
    })
    .await;
    got.into_inner().unwrap()
}

/// The outcome of each message's receipts, by messageId (or campaignId/openId).
fn by_subject(receipts: &[(String, Value)]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (_, r) in receipts {
        let subject = match r["messageId"].as_str() {
            Some(id) => id.to_owned(),
            None => format!(
                "{}/{}",
                r["campaignId"].as_str().unwrap_or(""),
                r["openId"].as_str().unwrap_or("")
            ),
        };
        m.entry(subject)
            .or_default()
            .push(r["outcome"].as_str().unwrap_or("").to_owned());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_has_its_receipt() {
    let mut f = Fleet::new("receipts_all", 100_000, 100).await;
    let tap = f.tap_receipts().await;
    let users = f.users(0, 4, 1).await;
    let subscriber = f
        .consent_users(10, 1, "TPL_ORDER_SHIPPED", 1)
        .await
        .remove(0);
    f.start("send");
    f.start("dispatch");
    f.publish_messages(&[
        json!({"messageId": "m-sent", "openId": users[0], "kind": "template", "templateId": TPL,
               "keywords": ["a"]}),
        json!({"messageId": "m-nothing", "openId": "oNobodyxxxxxxxxxxxxxxxxxxxxx", "kind": "template",
               "templateId": TPL, "keywords": ["a"]}),
        json!({"messageId": "m-sub", "openId": subscriber, "kind": "subscribe",
               "templateId": "TPL_ORDER_SHIPPED", "data": {"thing1": "Shipped"}}),
    ])
    .await;
    // A campaign asking for receipts, one recipient's data refused; and one not asking.
    f.publish_campaign(json!({"campaignId": "with-receipts", "templateId": TPL,
        "keywords": ["x"], "receipts": true,
        "audience": {"recipients": [{"openId": users[1]}, {"openId": users[2], "data": 5}]}}))
        .await;
    f.publish_campaign(
        json!({"campaignId": "without", "templateId": TPL, "keywords": ["x"],
        "audience": {"openIds": [users[3]]}}),
    )
    .await;
    let receipts = gather(&tap, Duration::from_secs(60), |r| r.len() >= 5).await;
    f.wait_complete("without", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut receipts = receipts;
    receipts.extend(tap.take().await);
    let subjects = by_subject(&receipts);
    assert_eq!(subjects["m-sent"], ["sent"], "{receipts:?}");
    assert_eq!(subjects["m-nothing"], ["no_credential"]);
    assert_eq!(subjects["m-sub"], ["sent"]);
    assert_eq!(subjects[&format!("with-receipts/{}", users[1])], ["sent"]);
    assert_eq!(
        subjects[&format!("with-receipts/{}", users[2])],
        ["invalid_data"]
    );
    assert_eq!(
        subjects.len(),
        5,
        "none for the campaign that did not ask: {subjects:?}"
    );
    for (key, r) in &receipts {
        let kind = if r["messageId"].is_null() {
            "campaign"
        } else {
            "message"
        };
        assert_eq!(key, &format!("{kind}.{}", r["outcome"].as_str().unwrap()));
        assert_eq!(r["appId"], json!(f.env.app.as_str()));
        assert!(r["at"].as_i64().unwrap() > 1_700_000_000_000);
        match r["outcome"].as_str().unwrap() {
            "sent" => assert_eq!(r["errcode"], json!(0)),
            _ => assert!(r["errcode"].is_null(), "{r}"),
        }
    }
    let sub = receipts
        .iter()
        .find(|(_, r)| r["messageId"] == "m-sub")
        .unwrap();
    assert!(
        sub.1["msgid"].as_i64().is_some(),
        "a subscribe send's msgid: {}",
        sub.1
    );
    assert_eq!(sub.1["templateId"], "TPL_ORDER_SHIPPED");
    // `wxpush message status` tells each message's outcome, from its published receipt.
    let status = |id: &str| {
        let out = wxpush_testkit::run(&f.env, &["message", "status", id, "--json"]);
        (
            out.status.success(),
            wxpush_testkit::stdout(&out),
            wxpush_testkit::stderr(&out),
        )
    };
    let (ok, out, err) = status("m-sent");
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "sent");
    assert_eq!(v["errcode"], 0);
    assert_eq!(v["openId"], json!(users[0]));
    let (_, out, _) = status("m-nothing");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "no_credential");
    let table = wxpush_testkit::run(&f.env, &["message", "status", "m-sub"]);
    let text = wxpush_testkit::stdout(&table);
    assert!(text.contains("outcome       sent"), "{text}");
    let (ok, _, err) = status("never-sent");
    assert!(!ok);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no message never-sent"), "{err}");
    // Published, then taken out of the outboxes.
    let left = f
        .deps
        .bank
        .receipt_outboxes_stale(&f.env.app, Duration::ZERO)
        .await
        .unwrap();
    assert!(left.is_empty(), "outboxes emptied: {left:?}");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_whose_process_died_before_publishing_is_published_by_the_sweep() {
    let mut f = Fleet::new("receipts_sweep", 100_000, 100).await;
    let tap = f.tap_receipts().await;
    // A sender that settled an outcome, with its receipt, and died before publishing it: the
    // bank's script writes both in one step, as the sender's settle does.
    let who = OpenId::new("oDiedxxxxxxxxxxxxxxxxxxxxxxx").unwrap();
    let fields = format!(
        r#"{{"messageId":"m-orphan","campaignId":null,"appId":"{}","openId":"{}","templateId":"{TPL}""#,
        f.env.app,
        who.as_str()
    );
    let marked = f
        .deps
        .bank
        .campaign_outcome(
            &f.env.app,
            &who,
            &format!("{}m-orphan", wxpush_domain::SINGLE_MARK),
            "invalid_data",
            Some(Receipt {
                fields: &fields,
                msgid: None,
            }),
        )
        .await
        .unwrap();
    assert_eq!(marked, wxpush_bank::Marked::Recorded);
    assert!(tap.take().await.is_empty(), "nothing published yet");
    // Any sender of the fleet sweeps it out once it is a few seconds old.
    f.start("send");
    let receipts = gather(&tap, Duration::from_secs(30), |r| !r.is_empty()).await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].0, "message.invalid_data");
    assert_eq!(receipts[0].1["messageId"], "m-orphan");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_senders_lose_no_receipt() {
    let mut f = Fleet::new("receipts_kill", 100_000, 100).await;
    let tap = f.tap_receipts().await;
    let users = f.users(0, 80, 2).await;
    f.fake.update_faults(|x| x.latency_ms = 200).unwrap();
    let mut victim = f.start("send");
    f.start("send");
    let messages: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, who)| {
            json!({"messageId": format!("k-{i}"), "openId": who, "kind": "template",
                               "templateId": TPL, "keywords": ["a"]})
        })
        .collect();
    f.publish_messages(&messages).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        f.kill(victim);
        victim = f.start("send");
    }
    f.fake.update_faults(|x| x.latency_ms = 0).unwrap();
    let receipts = gather(&tap, Duration::from_secs(90), |r| by_subject(r).len() >= 80).await;
    let subjects = by_subject(&receipts);
    assert_eq!(subjects.len(), 80, "every message has a receipt");
    // A sender killed after WeChat took its call (the fake delivers, then waits 200 ms before
    // it answers) leaves the formId in doubt: the next sender resends it, WeChat answers 41029,
    // and the message is `sent_unconfirmed` (docs/sending.md, the decision table). Seen when a
    // loaded run had more calls in flight at a kill; either way the user has one message.
    for (id, outcomes) in &subjects {
        assert!(
            outcomes
                .iter()
                .all(|o| o == "sent" || o == "sent_unconfirmed"),
            "{id}: {outcomes:?}"
        );
    }
    let per_user = f.delivered_per_user();
    assert_eq!(per_user.len(), 80, "every user has the message");
    assert!(per_user.values().all(|&n| n == 1), "one message each");
    f.stop_all();
}
