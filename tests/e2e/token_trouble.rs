//! A token endpoint that refuses for longer than the retry budget (issue 12, "Where a user is
//! dropped for good", the token part): the app's sends pause fleet-wide instead of spending
//! attempts, the endpoint is asked less and less often, and once it answers again every
//! recipient gets one message, none `dead_lettered`. Real `wxpush` processes, Redis,
//! RabbitMQ; the fake WeChat's secret is reset (`40125`, as WeChat answers a secret it no
//! longer knows) and later set back, as an operator would deploy the new one.

use std::time::Duration;

use serde_json::json;
use wxpush_fake_wechat::{Endpoint, RequestRecord};
use wxpush_testkit::fleet::{campaign, fake_config, tokens_issued, Fleet, SECRET};
use wxpush_testkit::{eventually, now_ms};

async fn sleep_until(at_ms: u64) {
    tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(now_ms() as u64))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_refusing_past_the_retry_budget_loses_nobody() {
    // Tokens live 20 s: the senders refresh 5 s before the end and stop using one 1 s before.
    let mut config = fake_config();
    config.token_lifetime_ms = 20_000;
    config.seed = Some(12);
    let mut f = Fleet::with_fake("token_refused", 40, 200, config).await;
    f.env.set("WXPUSH_SEND_RETRY_FOR", "20s");
    // Few jobs at once, so that a failing one gets its quick resends and is scheduled again
    // (its retry budget running) within a second or two.
    f.env.set("WXPUSH_SEND_CONCURRENCY", "4");
    let audience = 900;
    let reachable = f.users(0, audience, 1).await;
    f.start("dispatch");
    f.start("send");
    f.start("send");
    f.publish_campaign(campaign("tok-1", json!({"all": true})))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            !tokens_issued(&f.fake.requests()).is_empty()
        })
        .await,
        "no token was issued"
    );
    let t0 = tokens_issued(&f.fake.requests())[0];

    // The secret is reset before the senders' refresh (due at +15 s): every token call
    // answers 40125 from now on, and the token they hold stops being usable at +19 s. Sends
    // fail for now (-1) from +16 s: those jobs are mid-retry, their retry budget running,
    // when the token runs out.
    sleep_until(t0 + 12_000).await;
    f.fake
        .set_secret(None, "rotated-secret-not-deployed-yet")
        .unwrap();
    sleep_until(t0 + 16_000).await;
    f.fake.update_faults(|x| x.busy_probability = 1.0).unwrap();
    // The second refusal (10 s after the first) makes the fleet wait 20 s more before it asks
    // again: the secret is set back at once, and no token comes before then, about 27 s
    // after the token ran out, longer than the 20 s retry budget.
    let refused =
        |records: &[RequestRecord]| records.iter().filter(|r| r.errcode == Some(40125)).count();
    assert!(
        eventually(Duration::from_secs(60), || async {
            refused(&f.fake.requests()) >= 2
        })
        .await,
        "the token endpoint was not asked again"
    );
    let restore_at = now_ms() as u64;
    let before_restore = f.fake.requests();
    let sent_before = before_restore
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(0))
        .count();
    assert!(
        sent_before + 40 <= audience,
        "the campaign must still be running: {sent_before} of {audience} sent"
    );
    f.fake.set_secret(None, SECRET).unwrap();
    // Once a token comes again, the jobs mid-retry meet failures for 5 s more (and would be
    // given up had their wait been counted), then WeChat recovers.
    assert!(
        eventually(Duration::from_secs(90), || async {
            tokens_issued(&f.fake.requests())
                .iter()
                .any(|t| *t > restore_at)
        })
        .await,
        "no token after the secret was set back"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    f.fake.update_faults(|x| x.busy_probability = 0.0).unwrap();

    f.wait_complete("tok-1", Duration::from_secs(120)).await;
    let records = f.fake.requests();
    f.stop_all();
    let counts = f.counts("tok-1").await;
    assert_eq!(counts.get("dead_lettered"), None, "{counts:?}");
    f.check("tok-1", &reachable, audience).await;

    // The endpoint was not hammered while it refused: a refusal is remembered fleet-wide for
    // 10 s, then 20 s, 40 s... (the token service is asked once each time, not per sender
    // or per job).
    let refusals: Vec<u64> = records
        .iter()
        .filter(|r| matches!(r.endpoint, Endpoint::Token | Endpoint::StableToken))
        .filter(|r| r.errcode == Some(40125))
        .map(|r| r.at_ms - t0)
        .collect();
    eprintln!(
        "refusals at {refusals:?} ms; restored at {} ms; {counts:?}",
        restore_at - t0
    );
    let back_at = tokens_issued(&records)
        .into_iter()
        .find(|t| *t > restore_at)
        .expect("a token after the restore");
    assert!(
        back_at >= t0 + 19_000 + 21_000,
        "no token for longer than the retry budget: it came back at +{} ms",
        back_at - t0
    );
    assert!(!refusals.is_empty(), "the endpoint never refused");
    assert_eq!(refusals.len(), 2, "asked once per remembered refusal");
    assert!(
        counts.get("retried").copied().unwrap_or(0) >= 1,
        "no job was mid-retry: {counts:?}"
    );
    let busy = records
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(-1))
        .count();
    let mut busy_at = std::collections::BTreeMap::<u64, usize>::new();
    for r in records
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(-1))
    {
        *busy_at.entry((r.at_ms - t0) / 1000).or_default() += 1;
    }
    let tokens_at: Vec<u64> = tokens_issued(&records).iter().map(|t| t - t0).collect();
    eprintln!(
        "-1 answers per second since the first token {busy_at:?}; tokens at {tokens_at:?} ms"
    );
    assert!(busy >= 1, "no send failed around the refusals");
}
