//! The fleet-wide send rate, end to end (issue 12, "Where the rate is exceeded"): four real
//! `wxpush send` processes, 64 jobs at once each (`WXPUSH_SEND_CONCURRENCY`), share
//! `WXPUSH_SEND_RATE` = 20 while the token endpoint answers only after 6 s, at the start of the
//! campaign and again after WeChat revokes the token mid-campaign. Every one-second window of
//! the fake's own clock, *sliding* (starting at each call, not only at whole seconds), holds at
//! most the limiter's stated bound, burst included (`wxpush_fleet::max_calls_per_second`,
//! docs/sending.md): 22 calls at 20/s. Every call counts, whatever WeChat answered (a call
//! refused with `40001` took a permit too). Each user gets exactly one message.
//!
//! The failure this guards against: a permit taken before the token wait. Every in-flight job
//! then holds a permit while the token is fetched, and all of them call at once when it
//! arrives (two senders at rate 20 and a 6 s token once made 126 calls in one second).

use std::time::Duration;

use serde_json::json;
use wxpush_fake_wechat::{Endpoint, RequestRecord};
use wxpush_fleet::{capacity_for, max_calls_per_second, RateSettings};
use wxpush_testkit::fleet::{campaign, fake_config, tokens_issued, Fleet};
use wxpush_testkit::{eventually, now_ms};

const RATE: u32 = 20;
const SENDERS: usize = 4;
const TOKEN_LATENCY_MS: u64 = 6_000;
/// A token WeChat refuses is dropped only once it is this old (`TokenSettings::
/// min_refresh_interval`, 30 s): the revocation waits for it, so the fleet really fetches again.
const DROPPABLE_AFTER_MS: u64 = 31_000;

/// The send calls WeChat's side judged, in `atMs` order (every answer counts).
fn send_times(records: &[RequestRecord]) -> Vec<u64> {
    let mut t: Vec<u64> = records
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend)
        .map(|r| r.at_ms)
        .collect();
    t.sort_unstable();
    t
}

/// The most calls in any sliding one-second window `[t, t + 1000)` ms, and where it starts.
fn busiest_second(times: &[u64]) -> (usize, u64) {
    let mut best = (0, 0);
    let mut j = 0;
    for (i, &start) in times.iter().enumerate() {
        while j < times.len() && times[j] < start + 1000 {
            j += 1;
        }
        if j - i > best.0 {
            best = (j - i, start);
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_senders_keep_the_rate_while_tokens_take_six_seconds() {
    let mut config = fake_config();
    config.faults.token_latency_ms = TOKEN_LATENCY_MS;
    let mut f = Fleet::with_fake("rate_4x64", RATE, 200, config).await;
    f.env.set("WXPUSH_SEND_CONCURRENCY", "64");
    // About 31 s of sending before the revocation, some more after it.
    let audience = 760;
    let reachable = f.users(0, audience, 1).await;
    f.start("dispatch");
    for _ in 0..SENDERS {
        f.start("send");
    }
    f.publish_campaign(campaign("rate-1", json!({"all": true})))
        .await;

    // The first token: asked for as the jobs arrive, issued 6 s later.
    let first = eventually(Duration::from_secs(30), || async {
        !tokens_issued(&f.fake.requests()).is_empty()
    })
    .await;
    assert!(first, "no token was issued");
    let first_token_at = tokens_issued(&f.fake.requests())[0];
    let revoke_at = first_token_at + DROPPABLE_AFTER_MS;
    tokio::time::sleep(Duration::from_millis(
        revoke_at.saturating_sub(now_ms() as u64),
    ))
    .await;
    let revoked = f.fake.revoke_tokens(None).unwrap();
    assert!(revoked >= 1, "no token to revoke");
    let revoked_at = now_ms() as u64;
    let before = send_times(&f.fake.requests()).len();

    f.wait_complete("rate-1", Duration::from_secs(120)).await;
    let records = f.fake.requests();
    f.stop_all();

    // The bound, from the one function the limiter states it with: rate × 1.05 + burst.
    let bound = max_calls_per_second(RATE, RateSettings::default().permit_max_age);
    assert_eq!(
        f64::from(bound),
        (f64::from(RATE) * 1.05 + f64::from(capacity_for(RATE))).floor()
    );
    let times = send_times(&records);
    let (worst, at) = busiest_second(&times);
    assert!(
        worst <= bound as usize,
        "{worst} calls in the second from {at} ({} ms after the first token; bound {bound})",
        at.saturating_sub(first_token_at)
    );

    f.check("rate-1", &reachable, audience).await;

    // What the test is about happened: a new token was issued after the revocation (6 s for
    // the plain `stable_token` call, which answers the revoked token, 6 more for the forced
    // one), and sends went on after it.
    let second_token_at = records
        .iter()
        .find(|r| r.forced && r.errcode == Some(0) && r.at_ms > revoked_at)
        .map(|r| r.at_ms)
        .expect("a new (forced) token after the revocation");
    assert!(
        second_token_at >= revoked_at + 2 * TOKEN_LATENCY_MS,
        "the new token came sooner than the endpoint answers"
    );
    assert!(
        before + 60 <= audience,
        "the campaign must still be running at the revocation: {before} of {audience} sent"
    );
    let refused = records
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(40001))
        .count();
    assert!(refused >= 1, "no send met the revoked token");
    // Jobs that took the token before the revocation and then waited for permits do not
    // spend them on calls bound to be refused once their process saw the token refused:
    // about one 40001 per process (those already between their permit and their call).
    assert!(
        refused <= 3 * SENDERS,
        "{refused} calls spent on the revoked token"
    );
    let after_second = times.iter().filter(|t| **t >= second_token_at).count();
    assert!(
        after_second >= 2 * RATE as usize,
        "too few sends after the new token to see a burst: {after_second}"
    );

    for r in records
        .iter()
        .filter(|r| matches!(r.endpoint, Endpoint::Token | Endpoint::StableToken))
    {
        eprintln!(
            "token call received +{}ms judged +{}ms forced {} errcode {:?}",
            r.received_at_ms as i64 - first_token_at as i64,
            r.at_ms as i64 - first_token_at as i64,
            r.forced,
            r.errcode
        );
    }
    let refused_at: Vec<u64> = records
        .iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(40001))
        .map(|r| r.at_ms - first_token_at)
        .collect();
    eprintln!(
        "40001 answers from +{:?} to +{:?}",
        refused_at.first(),
        refused_at.last()
    );
    eprintln!(
        "{} calls, busiest sliding second {worst} at {}ms after the first token \
         (bound {bound}); tokens at +0 and +{}ms, revoked at +{}ms; {refused} answered 40001",
        times.len(),
        at.saturating_sub(first_token_at),
        second_token_at - first_token_at,
        revoked_at - first_token_at
    );
    // And the rate was used, not starved: at least 60 % of it over the sending time, the
    // token blackout after the revocation aside (a loaded machine wastes some permits on the
    // freshness fence).
    let busy_secs = (times.len() as f64 / f64::from(RATE)).ceil() as u64;
    let span_ms = times.last().unwrap() - times.first().unwrap();
    let blackout_ms = second_token_at - revoked_at;
    assert!(
        span_ms.saturating_sub(blackout_ms) <= busy_secs * 1000 * 5 / 3 + 2000,
        "sending took {span_ms} ms for {} calls (token blackout {blackout_ms} ms)",
        times.len()
    );
}
