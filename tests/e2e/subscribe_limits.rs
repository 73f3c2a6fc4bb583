//! WeChat's subscribe data limits at dispatch, end to end: the real `wxpush dispatch` binary,
//! the real Redis and RabbitMQ. A subscribe campaign whose data WeChat would refuse (`47003`
//! for every recipient) is dead-lettered once as `invalid_data`, naming the field, before any
//! job is published; the dispatcher goes on with the next campaign.
//!
//! The limits themselves are unit-tested in `crates/domain/src/subscribe_data.rs`.

use std::time::{Duration, Instant};

use lapin::options::BasicGetOptions;
use serde_json::{json, Value};
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{campaign, Fleet};

const SUB: &str = "TPL_ORDER_SHIPPED";

fn subscribe_campaign(id: &str, thing1: &str, audience: Value) -> Value {
    json!({"campaignId": id, "kind": "subscribe", "templateId": SUB,
           "page": "pages/order/detail?id=1",
           "data": {"thing1": {"value": thing1},
                    "character_string2": {"value": "SF1234567"}},
           "miniprogramState": "formal", "lang": "zh_CN", "audience": audience})
}

/// Dead letters of `<ns>.dead.dispatch` until `want` arrived (or 20 s passed), then a little
/// longer, so an unexpected extra one is seen too: (campaign id, reason code, reason).
async fn dead_letters(f: &Fleet, want: usize) -> Vec<(String, String, String)> {
    let take = |got: &mut Vec<_>, batch: Vec<(Vec<u8>, String, String)>| {
        for (body, code, reason) in batch {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["campaignId"].as_str().map(str::to_owned))
                .unwrap_or_default();
            got.push((id, code, reason));
        }
    };
    let mut got = Vec::new();
    let start = Instant::now();
    loop {
        take(
            &mut got,
            f.env.drain_dead_letters(&f.deps.broker, "dispatch").await,
        );
        if got.len() >= want || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    take(
        &mut got,
        f.env.drain_dead_letters(&f.deps.broker, "dispatch").await,
    );
    got
}

/// Every job in `<ns>.send`, taken off the queue: (campaign id, openId).
async fn take_jobs(f: &Fleet) -> Vec<(String, String)> {
    let ch = f.deps.broker.channel().await.expect("channel");
    let mut jobs = Vec::new();
    while let Some(m) = ch
        .basic_get(
            f.env.topology().send_queue().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        let job: Value = serde_json::from_slice(&m.delivery.data).expect("a JSON job");
        let field = |k: &str| job[k].as_str().unwrap_or_default().to_owned();
        jobs.push((field("campaignId"), field("openId")));
    }
    let _ = ch.close(200, "ok".into()).await;
    jobs
}

async fn send_queue_ready(f: &Fleet) -> u32 {
    f.env
        .queue_ready(&f.deps.broker, &f.env.topology().send_queue())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_campaign_over_a_data_limit_is_dead_lettered_once_and_dispatch_goes_on() {
    let mut f = Fleet::new("sub_limits", 100_000, 1000).await;
    let users = f.users(0, 5, 1).await;
    let d = f.start("dispatch");
    // No sender runs: whatever the dispatcher publishes stays in <ns>.send to be read.

    // thing1 is 21 characters, one over WeChat's 20.
    let thing1 = "Your order is shipped";
    assert_eq!(thing1.chars().count(), 21);
    f.publish_campaign(subscribe_campaign(
        "sub-too-long",
        thing1,
        json!({"openIds": users}),
    ))
    .await;
    let dead = dead_letters(&f, 1).await;
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    let (id, code, reason) = &dead[0];
    assert_eq!(id, "sub-too-long");
    assert_eq!(code, "invalid_data", "{reason}");
    assert!(
        reason.contains("thing1 is 21 characters, over the limit of 20 for thing"),
        "{reason}"
    );
    // Refused before anything else: no job, no campaign record.
    assert_eq!(send_queue_ready(&f).await, 0, "no job was published");
    assert!(f.record("sub-too-long").await.is_empty());
    assert!(f.running(d), "the dispatcher goes on");

    // The contract's section 7 example as written: its thing1 is 22 characters.
    f.publish_campaign(subscribe_campaign(
        "sub-contract-example",
        "Your order has shipped",
        json!({"openIds": users}),
    ))
    .await;
    let dead = dead_letters(&f, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "sub-contract-example");
    assert_eq!(dead[0].1, "invalid_data");
    assert!(
        dead[0].2.contains("thing1 is 22 characters"),
        "{:?}",
        dead[0]
    );
    assert_eq!(send_queue_ready(&f).await, 0, "no job was published");

    // At the limit, in Chinese (20 characters, 50 bytes): the data passes. Until the subscribe
    // send path lands, the campaign is then dead-lettered as unsupported_kind; afterwards it
    // is recorded and dispatched. Either way it is not refused for its data.
    let at_limit = "订单SF1234567已发货，请查收!!";
    assert_eq!(at_limit.chars().count(), 20);
    f.publish_campaign(subscribe_campaign(
        "sub-at-limit",
        at_limit,
        json!({"openIds": users}),
    ))
    .await;
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.is_empty()
        && f.record("sub-at-limit").await.is_empty()
        && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.extend(f.env.drain_dead_letters(&f.deps.broker, "dispatch").await);
    }
    assert!(
        !seen.is_empty() || !f.record("sub-at-limit").await.is_empty(),
        "the campaign at the limit was handled"
    );
    for (body, code, reason) in &seen {
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["campaignId"], "sub-at-limit");
        assert_eq!(
            code, "unsupported_kind",
            "not refused for its data: {reason}"
        );
    }

    // The next campaign, a template one, is dispatched to everyone.
    f.publish_campaign(campaign("tpl-after", json!({"all": true})))
        .await;
    let dispatched = eventually(Duration::from_secs(20), || async {
        f.snapshot("tpl-after").await.is_dispatched()
    })
    .await;
    assert!(dispatched, "{:?}", f.record("tpl-after").await);
    let jobs = take_jobs(&f).await;
    let mut to: Vec<&str> = jobs
        .iter()
        .filter(|(c, _)| c == "tpl-after")
        .map(|(_, u)| u.as_str())
        .collect();
    to.sort_unstable();
    assert_eq!(to, users.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        jobs.iter()
            .all(|(c, _)| c != "sub-too-long" && c != "sub-contract-example"),
        "no job for a refused campaign: {jobs:?}"
    );

    // Nothing more was dead-lettered: each refused campaign once.
    let late = dead_letters(&f, 0).await;
    assert!(
        late.iter().all(|(id, _, _)| id == "sub-at-limit"),
        "{late:?}"
    );
    f.stop_all();
}
