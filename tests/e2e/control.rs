//! An operator's campaign control (contract 8.5, issue 15 item 2) end to end, separate
//! processes: `wxpush campaign pause` stops new WeChat calls for the campaign fleet-wide within
//! a second and `resume` lets it complete, every user once; `cancel` records the recipients not
//! yet sent as `cancelled`, spending nothing, and the counts still add up.

use std::time::Duration;

use serde_json::json;
use wxpush_domain::OpenId;
use wxpush_testkit::eventually;
use wxpush_testkit::fleet::{campaign, Fleet};

fn control(f: &Fleet, action: &str, id: &str) {
    let out = wxpush_testkit::run(&f.env, &["campaign", action, id]);
    assert!(out.status.success(), "{}", wxpush_testkit::stderr(&out));
    let text = wxpush_testkit::stdout(&out);
    assert!(text.contains(id), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_campaign_calls_wechat_no_more_until_resumed() {
    // 60 sends a second: 300 users take about 5 s.
    let mut f = Fleet::new("control_pause", 60, 50).await;
    let users = f.users(0, 300, 1).await;
    f.start("dispatch");
    let metrics = wxpush_testkit::free_addr();
    f.start_with("send", &[("WXPUSH_HTTP_ADDR", &metrics.to_string())]);
    f.start("send");
    f.publish_campaign(campaign("paused-1", json!({"all": true})))
        .await;
    let started = eventually(Duration::from_secs(60), || async {
        f.template_sends() >= 90
    })
    .await;
    assert!(started);
    control(&f, "pause", "paused-1");
    // Obeyed within a second; calls already under way finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_pause = f.template_sends();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(f.template_sends(), at_pause, "no WeChat call while paused");
    assert!(at_pause < 300, "paused before the end: {at_pause}");
    let status = wxpush_testkit::run(&f.env, &["campaign", "status", "paused-1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["state"], "paused", "{v}");
    control(&f, "resume", "paused-1");
    f.wait_complete("paused-1", Duration::from_secs(90)).await;
    // The sender saw both controls, once each, and counted them.
    let (_, page) = wxpush_testkit::http_get(metrics, "/metrics").await.unwrap();
    for control in ["paused", "resumed"] {
        let line = format!("wxpush_campaign_controls_seen_total{{control=\"{control}\"}} 1");
        assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
    }
    f.check("paused-1", &users, 300).await;
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_records_the_rest_cancelled_and_spends_nothing() {
    let mut f = Fleet::new("control_cancel", 60, 50).await;
    let users = f.users(0, 300, 1).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(campaign("cancel-1", json!({"all": true})))
        .await;
    let half = eventually(Duration::from_secs(60), || async {
        f.template_sends() >= 150
    })
    .await;
    assert!(half);
    control(&f, "cancel", "cancel-1");
    f.wait_complete("cancel-1", Duration::from_secs(90)).await;
    let c = f.counts("cancel-1").await;
    let sent = c.get("sent").copied().unwrap_or(0);
    let cancelled = c.get("cancelled").copied().unwrap_or(0);
    assert!(cancelled > 0 && sent >= 150, "{c:?}");
    assert_eq!(sent + cancelled, 300, "the counts add up: {c:?}");
    assert_eq!(f.snapshot("cancel-1").await.targeted(), Some(300));
    assert!(f.accepted_per_user().values().all(|&n| n == 1));
    // The cancelled users' formIds are still theirs.
    assert_eq!(f.unsent_keep(&users, 1).await, cancelled);
    // Cancelled is final: pause and resume change nothing.
    let out = wxpush_testkit::run(&f.env, &["campaign", "pause", "cancel-1"]);
    assert!(wxpush_testkit::stdout(&out).contains("nothing to do"));
    let none = wxpush_testkit::run(&f.env, &["campaign", "cancel", "no-such-campaign"]);
    assert!(!none.status.success());
    assert_eq!(wxpush_testkit::stderr(&none).trim_end().lines().count(), 1);
    f.stop_all();
}

/// A recipient whose earlier attempt let its lease go holding a credential (a sender's fence,
/// or a death after it) when the campaign is cancelled: the next copy of its job resumes that
/// credential, gives it back and records `cancelled`; nothing is sent, the counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_gives_back_the_credential_an_earlier_attempt_held() {
    use wxpush_bank::record::Control;
    let mut f = Fleet::new("control_held", 100_000, 10).await;
    let users = f.users(0, 1, 1).await;
    let who = OpenId::new(&users[0]).unwrap();
    let body = campaign("held-1", json!({"openIds": [users[0]]})).to_string();
    let c = wxpush_domain::parse_campaign(body.as_bytes(), Default::default()).unwrap();
    let record = f.deps.bank.record(&f.env.app, "held-1");
    record.open(&c, Duration::from_secs(10)).await.unwrap();
    f.leave_held("held-1", &who, false).await;
    assert_eq!(record.control(Control::Cancel).await.unwrap(), Some(true));
    // The job's copy comes back to a sender.
    let mut job = c.job_for_user(&who);
    job.app_id = Some(f.env.app.to_string());
    f.publish_job(&job).await;
    f.start("send");
    let done = eventually(Duration::from_secs(30), || async {
        f.counts("held-1").await.get("cancelled") == Some(&1)
    })
    .await;
    assert!(done, "{:?}", f.counts("held-1").await);
    assert_eq!(f.usable(who.as_str()).await, 1, "given back");
    assert_eq!(f.template_sends(), 0, "nothing sent");
    f.stop_all();
}

/// Cancelled while the dispatcher is still fanning it out: the dispatcher publishes no more
/// jobs (it reads the cancel before each page) and marks the campaign dispatched with what it
/// published; the senders record those not yet sent `cancelled`; the counts add up to
/// `targeted`, and every user not sent keeps the formId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_cancelled_mid_fan_out_publishes_no_more_jobs() {
    // One user a page: fanning 3,000 users out takes far longer than the cancel does.
    let mut f = Fleet::new("control_fanout", 50, 1).await;
    let users = f.users(0, 3000, 1).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(campaign("fanout-1", json!({"all": true})))
        .await;
    let started = eventually(Duration::from_secs(60), || async {
        f.template_sends() >= 10
    })
    .await;
    assert!(started);
    control(&f, "cancel", "fanout-1");
    f.wait_complete("fanout-1", Duration::from_secs(120)).await;
    let targeted = f.snapshot("fanout-1").await.targeted().unwrap_or(0);
    assert!(targeted < 3000, "the fan-out stopped: {targeted}");
    let c = f.counts("fanout-1").await;
    let sent = c.get("sent").copied().unwrap_or(0);
    let cancelled = c.get("cancelled").copied().unwrap_or(0);
    assert_eq!(sent + cancelled, targeted, "the counts add up: {c:?}");
    assert_eq!(f.accepted_per_user().len() as u64, sent);
    assert_eq!(f.unsent_keep(&users, 1).await, 3000 - sent);
    f.stop_all();
}

/// Cancelled at its very start, while the sender holds a full prefetch of jobs waiting for rate
/// permits: the jobs in hand obey too (they read the flags again after their permit), so the
/// sends stop within about a second of the cancel, not once the jobs in hand are spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_holds_the_jobs_already_waiting_for_a_permit() {
    let mut f = Fleet::new("control_in_hand", 40, 50).await;
    let users = f.users(0, 200, 1).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(campaign("in-hand-1", json!({"all": true})))
        .await;
    let started = eventually(Duration::from_secs(60), || async {
        f.template_sends() >= 1
    })
    .await;
    assert!(started);
    control(&f, "cancel", "in-hand-1");
    f.wait_complete("in-hand-1", Duration::from_secs(90)).await;
    let c = f.counts("in-hand-1").await;
    let sent = c.get("sent").copied().unwrap_or(0);
    let cancelled = c.get("cancelled").copied().unwrap_or(0);
    // (The dispatcher stops fanning out too: `targeted` is what it published.)
    let targeted = f.snapshot("in-hand-1").await.targeted().unwrap_or(0);
    assert_eq!(sent + cancelled, targeted, "{c:?}");
    assert!(
        targeted > 64,
        "more jobs than a sender holds at once: {targeted}"
    );
    // 40 a second: about a second and a half of sends at most after the first one, where the
    // sender held 64 jobs waiting for permits when the cancel came.
    assert!(sent <= 60, "the jobs in hand obeyed the cancel: {c:?}");
    assert_eq!(f.accepted_per_user().len() as u64, sent);
    assert_eq!(f.unsent_keep(&users, 1).await, 200 - sent);
    f.stop_all();
}
