//! Quiet hours (contract 8.5, issue 15 item 3) end to end, separate processes: an app whose
//! quiet window covers "now" holds a campaign (`defer`, the default) and a single message that
//! says `"quietHours": "defer"` until the window ends, then sends every user once, released
//! over the spread; a message that says nothing goes out at once. `skip` records every
//! recipient `skipped_quiet_hours`, spending nothing; `ignore` sends at once.
//!
//! The window is computed here from the clock, in the app's zone (Asia/Shanghai, the default:
//! UTC+8 all year), with seconds (`HH:MM:SS-HH:MM:SS`), so it can end a few seconds from now.
//! The unit tests of wxpush-domain's `quiet` cover the boundaries and DST days.

use std::time::Duration;

use serde_json::{json, Value};
use wxpush_domain::OpenId;
use wxpush_fake_wechat::Endpoint;
use wxpush_testkit::fleet::{campaign, Fleet, TPL};
use wxpush_testkit::{eventually, now_ms};

/// `HH:MM:SS` in Asia/Shanghai (UTC+8, no DST) of a Unix second.
fn shanghai(unix_secs: i64) -> String {
    let s = (unix_secs + 8 * 3600).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A quiet window that began `before` seconds ago and ends `after` seconds from now (whole
/// seconds): the window, and its end in Unix ms.
fn window(before: i64, after: i64) -> (String, i64) {
    let now = now_ms() / 1000;
    let end = now + after;
    (
        format!("{}-{}", shanghai(now - before), shanghai(end)),
        end * 1000,
    )
}

/// Template sends the fake WeChat saw: (touser, at_ms).
fn sends(f: &Fleet) -> Vec<(String, u64)> {
    f.fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend)
        .filter_map(|r| r.touser.map(|t| (t, r.at_ms)))
        .collect()
}

fn status_json(f: &Fleet, id: &str) -> Value {
    let out = wxpush_testkit::run(&f.env, &["campaign", "status", id, "--json"]);
    assert!(out.status.success(), "{}", wxpush_testkit::stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn message(id: &str, who: &str, quiet: Option<&str>) -> Value {
    let mut m = json!({"messageId": id, "openId": who, "kind": "template",
                       "templateId": TPL, "keywords": "Your order,shipped"});
    if let Some(q) = quiet {
        m["quietHours"] = json!(q);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_campaign_waits_for_the_window_to_end_then_sends_everyone_once() {
    const SPREAD_SECS: i64 = 3;
    let mut f = Fleet::new("quiet_defer", 200, 50).await;
    let users = f.users(0, 40, 1).await;
    let loners = f.users(40, 2, 1).await;
    // Quiet since a minute ago, for 12 s more: time to start the roles and dispatch.
    let (quiet, end_ms) = window(60, 12);
    f.env.set("WXPUSH_QUIET_HOURS", &quiet);
    f.env
        .set("WXPUSH_QUIET_SPREAD_SECS", &SPREAD_SECS.to_string());
    f.start("dispatch");
    f.start("send");
    f.start("send");
    f.publish_campaign(campaign("quiet-defer-1", json!({"openIds": users})))
        .await;
    f.publish_messages(&[
        message("quiet-msg-now", &loners[0], None),
        message("quiet-msg-later", &loners[1], Some("defer")),
    ])
    .await;
    // A single message ignores quiet hours by default: out at once.
    let first = eventually(Duration::from_secs(8), || async {
        sends(&f).iter().any(|(who, _)| *who == loners[0])
    })
    .await;
    assert!(first, "the plain single message was not sent in the window");
    // Every recipient of the campaign is held, each counted once.
    let held = eventually(Duration::from_secs(10), || async {
        f.counts("quiet-defer-1").await.get("deferred") == Some(&40)
    })
    .await;
    assert!(held, "{:?}", f.counts("quiet-defer-1").await);
    assert!(
        now_ms() < end_ms,
        "the machine was too slow to hold them before the window's end"
    );

    f.wait_complete("quiet-defer-1", Duration::from_secs(60))
        .await;
    f.check("quiet-defer-1", &users, 40).await;
    let done = eventually(Duration::from_secs(20), || async {
        sends(&f).iter().any(|(who, _)| *who == loners[1])
    })
    .await;
    assert!(done, "the deferred single message was not sent");
    let all = sends(&f);
    for (who, at) in &all {
        if *who == loners[0] {
            assert!((*at as i64) < end_ms, "sent at once, in the window");
            continue;
        }
        // Nothing before the window's end; released within the spread (and the time a
        // hop through the 1 s delay tier and the rate limiter take: a few seconds at most).
        assert!(
            *at as i64 >= end_ms,
            "{who} was sent {} ms before the window's end",
            end_ms - *at as i64
        );
        assert!(
            (*at as i64) < end_ms + SPREAD_SECS * 1000 + 10_000,
            "{who} was sent {} ms after the window's end",
            *at as i64 - end_ms
        );
    }
    // Spread over the first seconds, not all at once: more than one second has sends.
    let seconds: std::collections::BTreeSet<i64> = all
        .iter()
        .filter(|(who, _)| *who != loners[0])
        .map(|(_, at)| (*at as i64 - end_ms) / 1000)
        .collect();
    assert!(seconds.len() >= 2, "{seconds:?}");

    let v = status_json(&f, "quiet-defer-1");
    assert_eq!(
        (v["deferred"].as_u64(), v["sent"].as_u64()),
        (Some(40), Some(40)),
        "{v}"
    );
    assert_eq!(v["skipped_quiet_hours"], 0, "{v}");
    assert_eq!(v["state"], "complete", "{v}");
    let human = wxpush_testkit::run(&f.env, &["campaign", "status", "quiet-defer-1"]);
    let text = wxpush_testkit::stdout(&human);
    assert!(text.contains("deferred (quiet hours)"), "{text}");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_records_everyone_skipped_and_ignore_sends_at_once() {
    let mut f = Fleet::new("quiet_skip", 200, 50).await;
    let users = f.users(0, 30, 1).await;
    // Quiet for the next ten minutes: nothing of this test waits for its end.
    let (quiet, end_ms) = window(60, 600);
    f.env.set("WXPUSH_QUIET_HOURS", &quiet);
    f.start("dispatch");
    f.start("send");
    let mut skip = campaign("quiet-skip-1", json!({"openIds": users}));
    skip["quietHours"] = json!("skip");
    skip["receipts"] = json!(true);
    let tap = f.tap_receipts().await;
    f.publish_campaign(skip).await;
    f.wait_complete("quiet-skip-1", Duration::from_secs(30))
        .await;
    let c = f.counts("quiet-skip-1").await;
    assert_eq!(c.get("skipped_quiet_hours"), Some(&30), "{c:?}");
    assert_eq!(c.get("sent"), None, "{c:?}");
    assert_eq!(c.get("deferred"), None, "{c:?}");
    assert!(sends(&f).is_empty(), "nothing sent");
    for who in &users {
        let left = f
            .deps
            .bank
            .usable_count(&f.env.app, &OpenId::new(who).unwrap())
            .await
            .unwrap();
        assert_eq!(left, 1, "{who}'s formId is still in the bank");
    }
    // Each recipient's receipt says so.
    let mut receipts = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while receipts.len() < 30 && std::time::Instant::now() < deadline {
        receipts.extend(tap.take().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receipts.len(), 30, "{receipts:?}");
    for (_, r) in &receipts {
        assert_eq!(r["outcome"], "skipped_quiet_hours", "{r}");
    }
    let v = status_json(&f, "quiet-skip-1");
    assert_eq!(v["skipped_quiet_hours"], 30, "{v}");
    assert_eq!(v["pending"], 0, "{v}");
    assert_eq!(v["state"], "complete", "{v}");
    let human = wxpush_testkit::run(&f.env, &["campaign", "status", "quiet-skip-1"]);
    let text = wxpush_testkit::stdout(&human);
    assert!(text.contains("skipped (quiet hours)"), "{text}");

    // The same users, a campaign that ignores quiet hours: sent at once, every one.
    let mut ignore = campaign("quiet-ignore-1", json!({"openIds": users}));
    ignore["quietHours"] = json!("ignore");
    f.publish_campaign(ignore).await;
    f.wait_complete("quiet-ignore-1", Duration::from_secs(30))
        .await;
    f.check("quiet-ignore-1", &users, 30).await;
    assert!(now_ms() < end_ms, "still in the window");
    f.stop_all();
}

/// A bad window, zone or spread stops a role with one readable line and a non-zero exit.
#[test]
fn a_bad_quiet_hours_setting_is_one_readable_line() {
    for (var, value, expect) in [
        (
            "WXPUSH_QUIET_HOURS",
            "22:00-22:00",
            "WXPUSH_QUIET_HOURS is invalid: '22:00-22:00' starts and ends at the same time",
        ),
        (
            "WXPUSH_QUIET_HOURS",
            "10pm-8am",
            "WXPUSH_QUIET_HOURS is invalid: '10pm-8am' is not a window HH:MM-HH:MM",
        ),
        (
            "WXPUSH_TIMEZONE",
            "Asia/Beijing",
            "WXPUSH_TIMEZONE is invalid: 'Asia/Beijing' is not a time zone of the tz database",
        ),
        (
            "WXPUSH_QUIET_SPREAD_SECS",
            "600",
            "WXPUSH_QUIET_SPREAD_SECS is invalid: '600' is not a whole number of seconds from 0 to 60",
        ),
    ] {
        let mut env = wxpush_testkit::TestEnv::new("quiet_config");
        env.set(var, value);
        let out = env.command(&["send"]).output().expect("run wxpush");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("wxpush: ") && err.contains(expect), "{err}");
    }
}

/// A recipient whose earlier attempt let its lease go holding a formId (a retry scheduled
/// before the window began, or a sender that died), when its job comes back inside the window
/// of a `skip` campaign: the job resumes that lease, gives the formId back and records
/// `skipped_quiet_hours`; the recipient is not left without an outcome, nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_gives_back_the_credential_an_earlier_attempt_held() {
    let mut f = Fleet::new("quiet_skip_held", 100_000, 10).await;
    let users = f.users(0, 1, 1).await;
    let who = OpenId::new(&users[0]).unwrap();
    let (quiet, _) = window(60, 600);
    f.env.set("WXPUSH_QUIET_HOURS", &quiet);
    let mut body = campaign("skip-held-1", json!({"openIds": [users[0]]}));
    body["quietHours"] = json!("skip");
    let c = wxpush_domain::parse_campaign(body.to_string().as_bytes(), Default::default()).unwrap();
    let record = f.deps.bank.record(&f.env.app, "skip-held-1");
    record.open(&c, Duration::from_secs(10)).await.unwrap();
    f.leave_held("skip-held-1", &who, true).await;
    let mut job = c.job_for_user(&who);
    job.app_id = Some(f.env.app.to_string());
    f.publish_job(&job).await;
    f.start("send");
    let done = eventually(Duration::from_secs(30), || async {
        f.counts("skip-held-1").await.get("skipped_quiet_hours") == Some(&1)
    })
    .await;
    assert!(done, "{:?}", f.counts("skip-held-1").await);
    assert_eq!(f.usable(who.as_str()).await, 1, "given back");
    assert!(sends(&f).is_empty(), "nothing sent");
    f.stop_all();
}
