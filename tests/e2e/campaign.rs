//! Campaigns end to end with separate processes: the real `wxpush dispatch` and `wxpush send`
//! binaries, the real Redis and RabbitMQ, the fake WeChat in this process. Every test ends
//! with the same checks: no user got two messages, every reachable user got one, and the
//! status counts add up to the audience.

use std::time::Duration;

use serde_json::json;
use wxpush_bank::record::{field, Opened, PageInFlight, DISPATCHING, DISPATCH_LEASE};
use wxpush_bank::ReachableCursor;
use wxpush_broker::topology::Needs;
use wxpush_broker::Publisher;
use wxpush_domain::campaign::CampaignLimits;
use wxpush_domain::{parse_campaign, OpenId};
use wxpush_fake_wechat::Endpoint;
use wxpush_testkit::fleet::{campaign, Fleet};
use wxpush_testkit::{eventually, reachable_users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_all_and_explicit_lists_reach_each_user_once() {
    let mut f = Fleet::new("camp_basic", 100_000, 1000).await;
    let reachable = f.users(0, 200, 2).await;
    f.start("dispatch");
    f.start("send");
    f.start("send");

    f.publish_campaign(campaign("all-1", json!({"all": true})))
        .await;
    f.wait_complete("all-1", Duration::from_secs(60)).await;
    f.check("all-1", &reachable, 200).await;

    // An explicit list: two reachable users, one unknown to the bank, one invalid openId.
    let list =
        json!({"openIds": [reachable[0], reachable[1], "oNobodyxxxxxxxxxxxxxxxxxxxxx", "bad id"]});
    f.publish_campaign(campaign("list-1", list)).await;
    f.wait_complete("list-1", Duration::from_secs(30)).await;
    let c = f.counts("list-1").await;
    assert_eq!(c.get("sent"), Some(&2), "{c:?}");
    assert_eq!(c.get("no_credential"), Some(&1), "{c:?}");
    assert_eq!(
        f.snapshot("list-1").await.text(field::REJECTED_RECIPIENTS),
        Some("1")
    );
    // The keywords became keyword1..2 and each user has one formId left for later.
    let left = f
        .deps
        .bank
        .usable_count(&f.env.app, &OpenId::new(&reachable[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(left, 0, "two campaigns spent both of its formIds");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_campaign_published_twice_sends_once() {
    let mut f = Fleet::new("camp_twice", 100_000, 1000).await;
    let reachable = f.users(0, 150, 3).await;
    f.start("dispatch");
    f.start("send");
    f.publish_campaign(campaign("twice", json!({"all": true})))
        .await;
    f.publish_campaign(campaign("twice", json!({"all": true})))
        .await;
    f.wait_complete("twice", Duration::from_secs(60)).await;
    // The second copy may arrive after the first finished (a no-op) or meet it mid-way
    // (duplicate jobs); either way nobody hears twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.wait_complete("twice", Duration::from_secs(30)).await;
    f.check("twice", &reachable, 150).await;
    // And again much later: still nothing new.
    f.publish_campaign(campaign("twice", json!({"all": true})))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.check("twice", &reachable, 150).await;
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_fan_out_is_finished_by_the_next_one() {
    let mut f = Fleet::new("camp_kill_dispatch", 100_000, 50).await;
    let reachable = f.users(0, 2000, 1).await;
    let d = f.start("dispatch");
    f.publish_campaign(campaign("kill-d", json!({"all": true})))
        .await;
    let started = eventually(Duration::from_secs(30), || async {
        f.snapshot("kill-d")
            .await
            .targeted()
            .is_some_and(|t| t >= 200)
    })
    .await;
    assert!(started);
    f.kill(d);
    let r = f.snapshot("kill-d").await;
    assert_eq!(r.state(), Some(DISPATCHING), "killed mid-fan-out: {r:?}");
    f.start("dispatch");
    f.start("send");
    f.start("send");
    f.wait_complete("kill-d", Duration::from_secs(90)).await;
    f.check("kill-d", &reachable, 2000).await;
    f.stop_all();
}

/// The moment a random kill rarely hits, made certain: a dispatcher wrote a page ahead and
/// published part of it, then died; a sender delivered those jobs (so those users left the
/// index, their only formId spent) before the next dispatcher came. The next one must publish
/// the same page again, not a fresh walk without those users, so that `targeted` counts them
/// and the campaign is not shown complete while jobs are still queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_a_killed_dispatcher_had_half_published_is_counted_once() {
    let mut f = Fleet::new("camp_page_in_flight", 100_000, 50).await;
    let reachable = f.users(0, 120, 1).await;
    let body = campaign("in-flight", json!({"all": true})).to_string();
    let mut c = parse_campaign(body.as_bytes(), CampaignLimits::default()).unwrap();
    c.app_id = Some(f.env.app.clone());
    let record = f.deps.bank.record(&f.env.app, "in-flight");

    // What the killed dispatcher left: the record (its lease runs out in a second), the first
    // page written ahead, and the first 30 of that page's jobs published.
    let Opened::Owned { lease, .. } = record.open(&c, Duration::from_secs(1)).await.unwrap() else {
        panic!("a new campaign is opened")
    };
    let first = f
        .deps
        .bank
        .reachable_page(&f.env.app, ReachableCursor::default(), 50)
        .await
        .unwrap();
    assert!(first.users.len() >= 50 && first.next.is_some(), "{first:?}");
    let page = PageInFlight::new(first.users, first.next);
    assert!(record.save_page(&lease, &page).await.unwrap());
    let topology = f.env.topology();
    topology
        .declare(&f.deps.broker, Needs::Dispatch)
        .await
        .unwrap();
    let jobs: Vec<Vec<u8>> = page.users[..30]
        .iter()
        .filter_map(|u| c.job_for(u))
        .map(|j| j.to_json())
        .collect();
    let publisher = Publisher::open(&f.deps.broker, topology.clone())
        .await
        .unwrap();
    let queue = topology.send_queue();
    publisher
        .publish_all("", jobs.iter().map(|j| (queue.as_str(), j.as_slice())))
        .await
        .unwrap();
    publisher.close().await;

    // A sender delivers them: those 30 users have left the index.
    f.start("send");
    let delivered = eventually(Duration::from_secs(30), || async {
        f.counts("in-flight").await.get("sent") == Some(&30)
    })
    .await;
    assert!(delivered, "{:?}", f.counts("in-flight").await);
    let left = reachable_users(&f.deps.bank, &f.env.app, 50).await;
    assert_eq!(
        left.len(),
        90,
        "the 30 users sent to are no longer in the index"
    );

    // The next dispatcher finishes the campaign.
    f.start("dispatch");
    f.publish_campaign(campaign("in-flight", json!({"all": true})))
        .await;
    f.wait_complete("in-flight", Duration::from_secs(60)).await;
    f.check("in-flight", &reachable, 120).await;
    let c = f.counts("in-flight").await;
    assert_eq!(
        c.get("duplicate"),
        Some(&30),
        "the page went out again: {c:?}"
    );
    let r = f.snapshot("in-flight").await;
    assert_eq!(
        r.text(field::PAGE),
        None,
        "the checkpoint forgets the page: {r:?}"
    );
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_campaign_loses_and_doubles_nothing() {
    let mut f = Fleet::new("camp_kill_send", 150, 1000).await;
    let reachable = f.users(0, 600, 2).await;
    f.start("dispatch");
    let s1 = f.start("send");
    f.start("send");
    f.publish_campaign(campaign("kill-s", json!({"all": true})))
        .await;
    let midway = eventually(Duration::from_secs(30), || async {
        f.counts("kill-s").await.get("sent").copied().unwrap_or(0) >= 150
    })
    .await;
    assert!(midway);
    f.kill(s1);
    f.start("send");
    f.wait_complete("kill-s", Duration::from_secs(120)).await;
    f.check("kill-s", &reachable, 600).await;
    f.stop_all();
}

/// Contract section 5: template `data` is passed through to WeChat as it is. A field's
/// `color` (a documented field of WeChat's template data once) and a field nobody knows yet
/// reach WeChat untouched, beside each value; the campaign is not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_data_reaches_wechat_as_the_campaign_gave_it() {
    let mut f = Fleet::new("camp_data_through", 100_000, 1000).await;
    let reachable = f.users(0, 20, 1).await;
    f.start("dispatch");
    f.start("send");
    let data = json!({"keyword1": {"value": "Weekly report", "color": "#173177"},
                      "keyword2": {"value": "3 new badges"},
                      "keyword3": {"value": "x", "futureField": {"nested": [1, 2]}}});
    let mut c = campaign("data-through", json!({"all": true}));
    c.as_object_mut().unwrap().remove("keywords");
    c["data"] = data.clone();
    f.publish_campaign(c).await;
    f.wait_complete("data-through", Duration::from_secs(60))
        .await;
    f.check("data-through", &reachable, 20).await;
    let sent: Vec<_> = f
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend && r.errcode == Some(0))
        .collect();
    assert_eq!(sent.len(), 20);
    for r in sent {
        assert_eq!(r.data.as_ref(), Some(&data), "as WeChat received it");
    }
    assert_eq!(f.snapshot("data-through").await.stopped_reason(), None);
    f.stop_all();
}

/// Waits until the dispatch queue has no ready message: every copy of the campaigns
/// published is in a dispatcher's hands.
async fn all_copies_taken(f: &Fleet) -> bool {
    let queue = f.env.topology().dispatch_queue();
    eventually(Duration::from_secs(30), || async {
        f.env.queue_ready(&f.deps.broker, &queue).await == 0
    })
    .await
}

/// Users of the dispatcher take-over tests: 120 pages of 50, enough that the first dispatcher
/// is still fanning out when the test acts on it, even on a fast machine.
const TAKE_OVER_USERS: usize = 6000;

/// Two dispatchers and two copies of campaign `id` over [`TAKE_OVER_USERS`] reachable users:
/// the first is mid-fan-out (200 targeted or more) and holds the lease, the second waits beside
/// it with the other copy. Returns the fleet, the reachable users and the two dispatchers.
async fn two_dispatchers_mid_campaign(name: &str, id: &str) -> (Fleet, Vec<String>, usize, usize) {
    let mut f = Fleet::new(name, 100_000, 50).await;
    let reachable = f.users(0, TAKE_OVER_USERS, 1).await;
    let d1 = f.start("dispatch");
    f.publish_campaign(campaign(id, json!({"all": true}))).await;
    f.publish_campaign(campaign(id, json!({"all": true}))).await;
    let started = eventually(Duration::from_secs(30), || async {
        f.snapshot(id).await.targeted().is_some_and(|t| t >= 200)
    })
    .await;
    assert!(started);
    let d2 = f.start("dispatch");
    assert!(all_copies_taken(&f).await, "the second dispatcher waits");
    (f, reachable, d1, d2)
}

/// Two senders send campaign `id` to the end: every reachable user gets it once.
async fn send_it_all(f: &mut Fleet, id: &str, reachable: &[String]) {
    f.start("send");
    f.start("send");
    // (6,000 users: on the clusters of a loaded 2-core machine this has taken over 90 s)
    f.wait_complete(id, Duration::from_secs(180)).await;
    f.check(id, reachable, TAKE_OVER_USERS).await;
}

/// The token of the record's lease owner (raised by each take).
async fn lease_owner(f: &Fleet, id: &str) -> u64 {
    f.snapshot(id)
        .await
        .text(field::LEASE_OWNER)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn lease_until_ms(r: &wxpush_bank::record::RecordSnapshot) -> i64 {
    r.text(field::LEASE_UNTIL_MS)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Issue 12, case 5: two dispatchers each given a copy of one campaign (it was published
/// twice) at the same moment. One takes the record's lease and fans the campaign out; the
/// other waits beside it and acknowledges its copy once the campaign is dispatched. Before the
/// lease both fanned it out: `targeted` counted every recipient twice and the campaign never
/// showed complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_given_the_same_campaign_fan_it_out_once() {
    let mut f = Fleet::new("camp_two_dispatchers", 100_000, 50).await;
    let reachable = f.users(0, 2000, 1).await;
    f.start("dispatch");
    f.start("dispatch");
    let queue = f.env.topology().dispatch_queue();
    let both = eventually(Duration::from_secs(30), || async {
        f.consumers(&queue).await == 2
    })
    .await;
    assert!(both, "both dispatchers consume {queue}");
    f.publish_campaign(campaign("two-d", json!({"all": true})))
        .await;
    f.publish_campaign(campaign("two-d", json!({"all": true})))
        .await;
    assert!(all_copies_taken(&f).await, "each dispatcher holds a copy");
    f.start("send");
    f.start("send");
    f.wait_complete("two-d", Duration::from_secs(90)).await;
    f.check("two-d", &reachable, 2000).await;
    let c = f.counts("two-d").await;
    assert_eq!(
        c.get("duplicate"),
        None,
        "every job was published once, by one dispatcher: {c:?}"
    );
    assert_eq!(
        lease_owner(&f, "two-d").await,
        1,
        "one lease was ever taken"
    );
    // The waiting copy is acknowledged once the campaign is dispatched, not handed back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.stop_all();
    assert_eq!(f.env.queue_ready(&f.deps.broker, &queue).await, 0);
}

/// A dispatcher SIGKILLed mid-fan-out while a second holds another copy of the campaign: the
/// killed one's copy goes back to the queue at once, but the second takes the campaign over
/// only once the killed one's lease has run out, then finishes it from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatchers_campaign_is_taken_over_after_its_lease() {
    let (mut f, reachable, d1, _) =
        two_dispatchers_mid_campaign("camp_takeover", "take-over").await;
    f.kill(d1);
    let killed = f.snapshot("take-over").await;
    assert_eq!(killed.state(), Some(DISPATCHING), "{killed:?}");
    assert_eq!(lease_owner(&f, "take-over").await, 1);
    let taken = eventually(DISPATCH_LEASE + Duration::from_secs(10), || async {
        lease_owner(&f, "take-over").await == 2
    })
    .await;
    assert!(taken, "taken over: {:?}", f.snapshot("take-over").await);
    let after = f.snapshot("take-over").await;
    let lease_ms = DISPATCH_LEASE.as_millis() as i64;
    assert!(
        lease_until_ms(&after) - lease_ms >= lease_until_ms(&killed),
        "taken over only once the killed owner's lease ran out: {killed:?} {after:?}"
    );
    send_it_all(&mut f, "take-over", &reachable).await;
    f.stop_all();
}

/// A dispatcher stopped by SIGTERM mid-campaign releases its lease as it hands its copy
/// back: a second one waiting beside it takes the campaign over at once, not a lease later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_stopped_mid_campaign_hands_it_over_at_once() {
    let (mut f, reachable, d1, _) =
        two_dispatchers_mid_campaign("camp_handover", "hand-over").await;
    let stopping = std::time::Instant::now();
    let (code, _) = f.terminate(d1);
    assert_eq!(code, Some(0));
    // Each take raises the token: past 1, another dispatcher holds or held it (the handed-back
    // copy, redelivered, can be taken again before a look: 4 was seen on a loaded run).
    let taken = eventually(Duration::from_secs(30), || async {
        lease_owner(&f, "hand-over").await >= 2
    })
    .await;
    assert!(taken, "taken over: {:?}", f.snapshot("hand-over").await);
    let after = stopping.elapsed();
    // Without the release, the lease would run until at least two thirds of it after its
    // last renewal (renewed every third): over 6.6 s after the SIGTERM.
    assert!(
        after < DISPATCH_LEASE * 3 / 5,
        "taken over {after:?} after the SIGTERM: the lease was not released"
    );
    send_it_all(&mut f, "hand-over", &reachable).await;
    f.stop_all();
}

/// A dispatcher stalled (SIGSTOP) past its lease while a second holds another copy: the second
/// takes the campaign over. The second is then stalled in turn, while it still holds the lease,
/// and the first woken: its lease gone, it changes nothing in the record (its renewal and its
/// checkpoint are refused) and stops, acknowledging its copy. The second, woken, finishes the
/// campaign with `targeted` exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_stalled_past_its_lease_stops_without_writing() {
    let (mut f, reachable, d1, d2) =
        two_dispatchers_mid_campaign("camp_stalled_dispatch", "stalled").await;
    f.signal(d1, "STOP");
    let taken = eventually(DISPATCH_LEASE + Duration::from_secs(10), || async {
        lease_owner(&f, "stalled").await == 2
    })
    .await;
    f.signal(d2, "STOP");
    assert!(taken, "taken over: {:?}", f.snapshot("stalled").await);
    let before = f.record("stalled").await;
    assert_eq!(before[field::STATE], DISPATCHING, "{before:?}");
    f.signal(d1, "CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = f.record("stalled").await;
    f.signal(d2, "CONT");
    assert_eq!(
        before, after,
        "the woken dispatcher, its lease taken over, wrote nothing"
    );
    send_it_all(&mut f, "stalled", &reachable).await;
    assert!(
        f.running(d1),
        "the stalled dispatcher stopped its campaign, not itself"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.stop_all();
    let queue = f.env.topology().dispatch_queue();
    assert_eq!(
        f.env.queue_ready(&f.deps.broker, &queue).await,
        0,
        "both copies acknowledged"
    );
}

/// WeChat answers `-1` (system busy, nothing sent) to every send for longer than the senders'
/// retry budget: every recipient with a credential is settled `dead_lettered`, credential
/// given back. Once WeChat is back, `wxpush campaign retry` queues exactly them again and each
/// gets one message; users without a credential keep their outcome, and a second run queues
/// nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_retry_sends_once_to_the_dead_lettered_and_to_nobody_else() {
    let mut f = Fleet::new("camp_retry", 100_000, 1000).await;
    let reachable = f.users(0, 30, 1).await;
    f.fake.update_faults(|x| x.busy_probability = 1.0).unwrap();
    let budget = [
        ("WXPUSH_SEND_RETRY_FOR", "3s"),
        ("WXPUSH_SEND_RETRY_MAX_DELAY", "1s"),
    ];
    f.start("dispatch");
    f.start_with("send", &budget);
    let mut audience = json!(reachable.clone());
    let nobody = [
        "oNobody1xxxxxxxxxxxxxxxxxxxxx",
        "oNobody2xxxxxxxxxxxxxxxxxxxxx",
    ];
    if let Some(list) = audience.as_array_mut() {
        list.extend(nobody.iter().map(|n| json!(n)));
    }
    f.publish_campaign(campaign("retry-1", json!({ "openIds": audience })))
        .await;
    f.wait_complete("retry-1", Duration::from_secs(60)).await;
    let c = f.counts("retry-1").await;
    assert_eq!(c.get("dead_lettered"), Some(&30), "{c:?}");
    assert_eq!(c.get("no_credential"), Some(&2), "{c:?}");
    assert!(f.accepted_per_user().is_empty(), "nothing went out");
    let left = f
        .deps
        .bank
        .usable_count(&f.env.app, &OpenId::new(&reachable[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(left, 1, "a dead-lettered recipient's formId was given back");

    f.fake.update_faults(|x| x.busy_probability = 0.0).unwrap();
    let out = wxpush_testkit::run(&f.env, &["campaign", "retry", "retry-1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value =
        serde_json::from_str(&wxpush_testkit::stdout(&out)).expect("one JSON line");
    assert_eq!(answer["requeued"], 30, "{answer}");
    f.wait_complete("retry-1", Duration::from_secs(60)).await;
    f.check("retry-1", &reachable, 32).await;
    let c = f.counts("retry-1").await;
    assert_eq!(c.get("sent"), Some(&30), "{c:?}");
    assert_eq!(c.get("dead_lettered").copied().unwrap_or(0), 0, "{c:?}");
    assert_eq!(c.get("requeued"), Some(&30), "{c:?}");
    assert_eq!(c.get("no_credential"), Some(&2), "{c:?}");

    // Nothing left to retry: a second run queues nobody and sends nothing.
    let out = wxpush_testkit::run(&f.env, &["campaign", "retry", "retry-1"]);
    assert!(out.status.success(), "{out:?}");
    let text = wxpush_testkit::stdout(&out);
    assert!(text.contains("no dead-lettered recipient"), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.check("retry-1", &reachable, 32).await;

    // An unknown campaign is one line and a failure, not a retry of nothing.
    let out = wxpush_testkit::run(&f.env, &["campaign", "retry", "no-such-campaign"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no campaign no-such-campaign"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    f.stop_all();
}
