//! The fault-injection suite: the real role binaries, the real Redis and RabbitMQ, faults
//! injected between them (a TCP proxy the test controls), into them (SIGKILL, SIGTERM) and
//! into WeChat (the fake's faults). Every test ends with the campaign checks: no user got two
//! messages, every reachable user got one, the counts add up, no upload was lost. Each prints
//! what it measured (`cargo test --test e2e faults:: -- --nocapture` shows it).
//!
//! The machine's shared RabbitMQ and Redis are never stopped: outages are the proxy's.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use wxpush_domain::OpenId;
use wxpush_testkit::fleet::{campaign, Fleet};
use wxpush_testkit::proxy::{target_of, FaultProxy};
use wxpush_testkit::{
    amqp_url, eventually, form_id, free_addr, http_get, now_ms, redis_url, CapturedStderr, TEST_APP,
};

/// `n` uploads of `per` formIds each, for users `oUp<from..>`.
fn uploads(from: usize, n: usize, per: usize) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|u| {
            let ids: Vec<_> = (0..per)
                .map(|i| json!({"formId": form_id(u as u64, i as u64), "expire": now_ms() + 86_400_000}))
                .collect();
            json!({"openId": format!("oUp{u:06}xxxxxxxxxxxxxxxxxxxx"), "formIds": ids})
                .to_string()
                .into_bytes()
        })
        .collect()
}

/// Every upload's formIds are in the bank.
async fn all_stored(f: &Fleet, from: usize, n: usize, per: u64) -> bool {
    for u in from..from + n {
        let who = OpenId::new(&format!("oUp{u:06}xxxxxxxxxxxxxxxxxxxx")).unwrap();
        if f.deps
            .bank
            .usable_count(&f.env.app, &who)
            .await
            .unwrap_or(0)
            < per
        {
            return false;
        }
    }
    true
}

/// The broker node the tests' proxies stand in front of: the one of `WXPUSH_AMQP_URL`, or the
/// first of a broker cluster's (they share their queues).
fn amqp_node() -> String {
    wxpush_domain::split_urls(&amqp_url())[0].to_owned()
}

/// `WXPUSH_AMQP_URL` with `query` on every node's URL.
fn amqp_with(query: &str) -> String {
    wxpush_domain::split_urls(&amqp_url())
        .iter()
        .map(|u| format!("{u}?{query}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Redis network-cut tests put the test kit's TCP proxy between the roles and Redis. On a
/// Redis Cluster the client connects to the addresses the nodes announce, past any proxy in
/// front of a seed, so those tests run on a single node only (the broker's cuts run on the
/// broker cluster too). Prints why when it skips.
fn redis_proxy_possible(test: &str) -> bool {
    let possible = !wxpush_testkit::redis_nodes::is_cluster();
    if !possible {
        println!("{test}: skipped on a Redis Cluster (a proxy in front of a seed is bypassed)");
    }
    possible
}

async fn sent(f: &Fleet, id: &str) -> u64 {
    f.counts(id).await.get("sent").copied().unwrap_or(0)
}

/// Starts `role` reaching Redis through `via` (a fault proxy) and serving HTTP on a free
/// port: that port and the role's stderr.
fn start_via_redis(f: &mut Fleet, role: &str, via: &str) -> (std::net::SocketAddr, CapturedStderr) {
    let addr = free_addr();
    let a = addr.to_string();
    let i = f.start_with(role, &[("WXPUSH_REDIS_URL", via), ("WXPUSH_HTTP_ADDR", &a)]);
    (addr, CapturedStderr::take(&mut f.children[i]))
}

/// The role serving HTTP on `addr` says it is ready.
async fn is_ready(addr: std::net::SocketAddr) -> bool {
    http_get(addr, "/readyz")
        .await
        .is_some_and(|(s, _)| s == 200)
}

/// No formId was accepted twice by the fake WeChat (token calls, which answer errcode 0 too,
/// carry none).
fn no_form_id_twice(f: &Fleet) {
    let mut seen = HashSet::new();
    for r in f.fake.requests() {
        if let (Some(0), Some(id)) = (r.errcode, r.form_id) {
            assert!(seen.insert(id.clone()), "formId {id} accepted twice");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_broker_connections_are_resumed_and_nothing_is_lost_or_doubled() {
    let mut f = Fleet::new("fault_amqp", 150, 100).await;
    let reachable = f.users(0, 600, 2).await;
    let proxy = FaultProxy::start(target_of(&amqp_node())).await;
    let via = proxy.url(&amqp_node());
    // The supervisor at info: a failure below shows when each role reconnected.
    let vars = [
        ("WXPUSH_AMQP_URL", via.as_str()),
        ("WXPUSH_LOG", "warn,wxpush_roles::supervise=info"),
    ];
    let roles = [
        f.start_with("ingest", &vars),
        f.start_with("dispatch", &vars),
        f.start_with("send", &vars),
        f.start_with("send", &vars),
    ];
    let logs: Vec<_> = roles
        .iter()
        .map(|&i| CapturedStderr::take(&mut f.children[i]))
        .collect();
    let all_logs = || logs.iter().map(|l| l.text()).collect::<Vec<_>>().join("\n");
    f.env.declare_ingest(&f.deps.broker).await;
    // An explicit audience: the users uploaded meanwhile are not the fake WeChat's.
    f.publish_campaign(campaign("amqp-cut", json!({"openIds": reachable})))
        .await;
    f.env
        .publish_uploads(&f.deps.broker, &uploads(0, 300, 2))
        .await;

    let mut recoveries = Vec::new();
    for at in [100, 300] {
        assert!(
            eventually(Duration::from_secs(60), || async {
                sent(&f, "amqp-cut").await >= at
            })
            .await
        );
        let before = proxy.accepted();
        let cut_at = Instant::now();
        proxy.cut();
        // Every process opens its connection again; work flows again.
        let back = eventually(Duration::from_secs(30), || async {
            proxy.accepted() >= before + roles.len() as u64
        })
        .await;
        assert!(
            back,
            "every role reconnected ({} of {}); their logs:\n{}",
            proxy.accepted() - before,
            roles.len(),
            all_logs()
        );
        let reconnected = cut_at.elapsed();
        let progress = sent(&f, "amqp-cut").await;
        assert!(
            eventually(Duration::from_secs(30), || async {
                sent(&f, "amqp-cut").await > progress
            })
            .await
                || f.complete("amqp-cut").await,
            "sending resumed after the cut"
        );
        recoveries.push((reconnected, cut_at.elapsed()));
    }
    f.wait_complete("amqp-cut", Duration::from_secs(120)).await;
    f.check("amqp-cut", &reachable, 600).await;
    no_form_id_twice(&f);
    assert!(
        eventually(Duration::from_secs(30), || all_stored(&f, 0, 300, 2)).await,
        "every upload stored"
    );
    for &i in &roles {
        assert!(f.running(i), "role {i} kept running through the cuts");
    }
    if std::env::var("WXPUSH_TEST_SHOW_LOG").is_ok() {
        println!("{}", all_logs());
    }
    for (n, (reconnected, flowing)) in recoveries.iter().enumerate() {
        println!(
            "RabbitMQ cut {}: all 4 roles reconnected in {} ms, sending again within {} ms",
            n + 1,
            reconnected.as_millis(),
            flowing.as_millis()
        );
    }
    f.stop_all();
}

/// Jobs a campaign's senders hold unacknowledged: published - finished - ready in the queue,
/// the most of five looks 300 ms apart (one look can fall between a sender's acks and the
/// broker's next deliveries, on a loaded machine or a cluster, and see fewer held).
async fn held(f: &Fleet, id: &str, published: u32) -> u32 {
    let mut most = 0;
    for _ in 0..5 {
        let ready = f
            .env
            .queue_ready(&f.deps.broker, &f.env.topology().send_queue())
            .await;
        let done = f.finished(id).await as u32;
        most = most.max(published.saturating_sub(done).saturating_sub(ready));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_is_back_after_a_reconnect() {
    let mut f = Fleet::new("fault_prefetch", 100_000, 1000).await;
    let reachable = f.users(0, 200, 1).await;
    // Slow WeChat: jobs pile up in the queue, each sender holding exactly its prefetch.
    f.fake.update_faults(|x| x.latency_ms = 400).unwrap();
    let proxy = FaultProxy::start(target_of(&amqp_node())).await;
    let via = proxy.url(&amqp_node());
    f.start("dispatch");
    f.start_with(
        "send",
        &[
            ("WXPUSH_AMQP_URL", via.as_str()),
            ("WXPUSH_SEND_CONCURRENCY", "4"),
        ],
    );
    f.publish_campaign(campaign("prefetch", json!({"all": true})))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            sent(&f, "prefetch").await >= 10
        })
        .await
    );
    let before = held(&f, "prefetch", 200).await;
    proxy.cut();
    assert!(
        eventually(Duration::from_secs(30), || async {
            sent(&f, "prefetch").await >= 40
        })
        .await
    );
    let after = held(&f, "prefetch", 200).await;
    println!("jobs held by the sender: {before} before the cut, {after} after it (prefetch 8)");
    assert!(
        (7..=9).contains(&before) && (7..=9).contains(&after),
        "the sender holds its prefetch (8), before ({before}) and after ({after}) a reconnect"
    );
    f.fake.update_faults(|x| x.latency_ms = 0).unwrap();
    f.wait_complete("prefetch", Duration::from_secs(60)).await;
    f.check("prefetch", &reachable, 200).await;
    f.stop_all();
}

/// Several broker nodes in `WXPUSH_AMQP_URL` (two proxies in front of the one broker stand for
/// two nodes of a cluster, which share their queues): a role skips a node that does not answer,
/// and when its node goes away (every connection closed, new ones refused) it reconnects to
/// the next node of the list and goes on; nothing uploaded meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_whose_broker_node_goes_away_moves_to_the_next_listed_node() {
    let mut f = Fleet::new("fault_amqp_nodes", 100, 100).await;
    let node = amqp_node();
    let a = FaultProxy::start(target_of(&node)).await;
    let b = FaultProxy::start(target_of(&node)).await;
    let dead = node.replace(&target_of(&node).to_string(), "127.0.0.1:1");
    let nodes = format!("{dead},{},{}", a.url(&node), b.url(&node));
    let ingest = f.start_with(
        "ingest",
        &[
            ("WXPUSH_AMQP_URL", nodes.as_str()),
            ("WXPUSH_LOG", "warn,wxpush_roles=info"),
        ],
    );
    let log = CapturedStderr::take(&mut f.children[ingest]);
    f.env.declare_ingest(&f.deps.broker).await;
    f.env
        .publish_uploads(&f.deps.broker, &uploads(0, 100, 2))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || all_stored(&f, 0, 100, 2)).await,
        "stored through the first node that answered: {}",
        log.text()
    );
    assert!(a.accepted() >= 1, "connected through node a");
    assert_eq!(b.accepted(), 0, "node b not used yet");

    a.down();
    f.env
        .publish_uploads(&f.deps.broker, &uploads(100, 100, 2))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || all_stored(&f, 100, 100, 2)).await,
        "stored after node a went away: {}",
        log.text()
    );
    assert!(b.accepted() >= 1, "reconnected to node b: {}", log.text());
    assert!(all_stored(&f, 0, 100, 2).await);
    assert!(f.running(ingest), "{}", log.text());
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_pauses_every_role_which_then_resumes_on_its_own() {
    if !redis_proxy_possible("a_redis_outage_pauses_every_role") {
        return;
    }
    let mut f = Fleet::new("fault_redis", 150, 100).await;
    let reachable = f.users(0, 500, 2).await;
    let proxy = FaultProxy::start(target_of(&redis_url())).await;
    let via = proxy.url(&redis_url());
    let (mut http, mut logs) = (Vec::new(), Vec::new());
    for role in ["ingest", "dispatch", "send"] {
        let (addr, log) = start_via_redis(&mut f, role, &via);
        http.push(addr);
        logs.push(log);
    }
    f.env.declare_ingest(&f.deps.broker).await;
    for &addr in &http {
        assert!(
            eventually(Duration::from_secs(20), || is_ready(addr)).await,
            "ready before the outage"
        );
    }
    // An explicit audience: the users uploaded meanwhile are not the fake WeChat's.
    f.publish_campaign(campaign("redis-out", json!({"openIds": reachable})))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            sent(&f, "redis-out").await >= 100
        })
        .await
    );
    proxy.down();
    let down_at = Instant::now();
    f.env
        .publish_uploads(&f.deps.broker, &uploads(0, 200, 1))
        .await;
    // Every role reports itself not ready while Redis is unreachable.
    for &addr in &http {
        assert!(
            eventually(Duration::from_secs(10), || async {
                http_get(addr, "/readyz")
                    .await
                    .is_some_and(|(s, body)| s == 503 && body.contains("\"redis\":false"))
            })
            .await,
            "{addr} not ready during the outage"
        );
    }
    let during = sent(&f, "redis-out").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        sent(&f, "redis-out").await,
        during,
        "nothing is sent while the senders cannot reach Redis"
    );
    proxy.up();
    let up_at = Instant::now();
    for &addr in &http {
        assert!(
            eventually(Duration::from_secs(30), || is_ready(addr)).await,
            "{addr} ready again"
        );
    }
    let ready_again = up_at.elapsed();
    f.wait_complete("redis-out", Duration::from_secs(120)).await;
    f.check("redis-out", &reachable, 500).await;
    no_form_id_twice(&f);
    assert!(
        eventually(Duration::from_secs(30), || all_stored(&f, 0, 200, 1)).await,
        "every upload sent during the outage stored"
    );
    f.stop_all();
    for (role, log) in ["ingest", "dispatch", "send"].iter().zip(&logs) {
        let text = log.text();
        let warned = text.matches("not consuming").count();
        // One line when the outage starts, then one per 30 s: never one per message. (An idle
        // dispatcher meets no error: it waits for its next campaign, not ready meanwhile.)
        let least = usize::from(*role != "dispatch");
        assert!(
            (least..=3).contains(&warned),
            "{role} logged the outage {warned} times:\n{text}"
        );
    }
    println!(
        "Redis down {} s: all 3 roles ready again {} ms after it came back",
        (up_at - down_at).as_secs(),
        ready_again.as_millis()
    );
}

/// The last upload before a quiet spell arrives while Redis is down. Its write gives up after
/// ingest's 5 s hold, and no other upload comes to make ingest look at it: ingest must notice
/// the failure then, say so, hand the upload back and store it once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_held_through_a_redis_outage_is_stored_without_another_upload() {
    if !redis_proxy_possible("an_upload_held_through_a_redis_outage") {
        return;
    }
    let mut f = Fleet::new("fault_hold", 150, 100).await;
    let proxy = FaultProxy::start(target_of(&redis_url())).await;
    let via = proxy.url(&redis_url());
    let (addr, log) = start_via_redis(&mut f, "ingest", &via);
    f.env.declare_ingest(&f.deps.broker).await;
    assert!(
        eventually(Duration::from_secs(20), || is_ready(addr)).await,
        "ready before the outage"
    );
    proxy.down();
    f.env
        .publish_uploads(&f.deps.broker, &uploads(0, 1, 2))
        .await;
    // Longer than the hold, so the write gives up while Redis is still down.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!all_stored(&f, 0, 1, 2).await, "stored during the outage");
    proxy.up();
    let up_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || all_stored(&f, 0, 1, 2)).await,
        "the upload held through the outage was never stored:\n{}",
        log.text()
    );
    let stored_after = up_at.elapsed();
    f.stop_all();
    let warned = log.text().matches("not consuming").count();
    assert_eq!(
        warned,
        1,
        "ingest logged the outage {warned} times:\n{}",
        log.text()
    );
    println!(
        "an upload held through an 8 s Redis outage: stored {} ms after Redis came back",
        stored_after.as_millis()
    );
}

/// Kills a random role process every 0.3-1.5 s during one campaign (and an upload stream),
/// restarting it at once, for `secs` seconds or until the campaign completes.
/// Most openIds in one chaos campaign.
const CHAOS_LIST_MAX: usize = 20_000;

async fn chaos(name: &str, secs: u64, users: usize, upload_users: usize) {
    let mut f = Fleet::new(name, 400, 50).await;
    let reachable = f.users(0, users, 2).await;
    let mut live = [
        ("dispatch", f.start("dispatch")),
        ("send", f.start("send")),
        ("send", f.start("send")),
        ("ingest", f.start("ingest")),
    ];
    f.env.declare_ingest(&f.deps.broker).await;
    // Explicit lists (the users uploaded meanwhile are not the fake WeChat's), at most
    // 20,000 openIds a campaign so each stays under the 1 MiB campaign limit.
    let campaigns: Vec<(String, &[String])> = if reachable.len() <= CHAOS_LIST_MAX {
        vec![("chaos".to_owned(), &reachable[..])]
    } else {
        reachable
            .chunks(CHAOS_LIST_MAX)
            .enumerate()
            .map(|(i, c)| (format!("chaos-{i}"), c))
            .collect()
    };
    for (id, audience) in &campaigns {
        f.publish_campaign(campaign(id, json!({ "openIds": audience })))
            .await;
    }
    let bodies = uploads(0, upload_users, 2);
    let started = Instant::now();
    let mut kills = 0;
    let mut published = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        if published < bodies.len() {
            let end = (published + 200).min(bodies.len());
            f.env
                .publish_uploads(&f.deps.broker, &bodies[published..end])
                .await;
            published = end;
        }
        let pause = 300 + fastrand::u64(0..1200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = fastrand::usize(0..live.len());
        let (role, i) = live[victim];
        f.kill(i);
        kills += 1;
        live[victim] = (role, f.start(role));
        if kills >= 10 && published == bodies.len() {
            let mut all = true;
            for (id, _) in &campaigns {
                all &= f.complete(id).await;
            }
            if all {
                break;
            }
        }
    }
    if published < bodies.len() {
        f.env
            .publish_uploads(&f.deps.broker, &bodies[published..])
            .await;
    }
    for (id, audience) in &campaigns {
        f.wait_complete(id, Duration::from_secs(180)).await;
        f.check(id, audience, audience.len()).await;
    }
    no_form_id_twice(&f);
    assert!(
        eventually(Duration::from_secs(60), || all_stored(
            &f,
            0,
            upload_users,
            2
        ))
        .await,
        "every upload stored"
    );
    let mut c = BTreeMap::new();
    for (id, _) in &campaigns {
        for (k, v) in f.counts(id).await {
            *c.entry(k).or_insert(0) += v;
        }
    }
    println!(
        "{kills} SIGKILLs in {} s: {} users sent once each, 0 twice, 0 formIds reused, \
         {upload_users} uploads all stored; outcome counts {c:?}",
        started.elapsed().as_secs(),
        reachable.len()
    );
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_killed_at_random_many_times_lose_and_double_nothing() {
    chaos("fault_chaos", 25, 1500, 1000).await;
}

/// The long run of the same: `WXPUSH_SOAK_SECS` (default 600) of kills (`scripts/soak.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak run: scripts/soak.sh roles"]
async fn soak_roles_killed_at_random() {
    let secs = std::env::var("WXPUSH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    chaos("fault_soak", secs, 50_000, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_campaign_exits_zero_within_the_deadline_and_loses_nothing() {
    let mut f = Fleet::new("fault_sigterm", 120, 50).await;
    let reachable = f.users(0, 600, 2).await;
    let vars = [("WXPUSH_SHUTDOWN_SECS", "5")];
    let d = f.start_with("dispatch", &vars);
    let s1 = f.start_with("send", &vars);
    let s2 = f.start_with("send", &vars);
    f.publish_campaign(campaign("term", json!({"all": true})))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            sent(&f, "term").await >= 100
        })
        .await
    );
    // Slow answers: jobs are in flight at WeChat when the signal comes.
    f.fake.update_faults(|x| x.latency_ms = 1500).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for i in [d, s1, s2] {
        let (code, t) = f.terminate(i);
        assert_eq!(code, Some(0), "a stopped role exits 0");
        assert!(
            t < Duration::from_secs(7),
            "stopped within the 5 s deadline: {t:?}"
        );
        took.push(t.as_millis());
    }
    f.fake.update_faults(|x| x.latency_ms = 0).unwrap();
    f.start("dispatch");
    f.start("send");
    f.wait_complete("term", Duration::from_secs(120)).await;
    f.check("term", &reachable, 600).await;
    no_form_id_twice(&f);
    println!("SIGTERM mid-campaign: dispatcher and 2 senders exited 0 in {took:?} ms");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_misbehaving_delays_the_campaign_but_loses_and_doubles_nothing() {
    let mut f = Fleet::new("fault_wechat", 300, 1000).await;
    let reachable = f.users(0, 300, 3).await;
    // The token endpoint fails for 4 s at the start, then a third of sends answer -1 and
    // some answer HTTP 500, and some answers come after the sender's timeout.
    f.fake.token_outage(Duration::from_secs(4));
    f.fake
        .update_faults(|x| {
            x.busy_probability = 0.3;
            x.http500_probability = 0.05;
        })
        .unwrap();
    f.start("dispatch");
    f.start("send");
    f.start("send");
    let started = Instant::now();
    f.publish_campaign(campaign("wechat", json!({"all": true})))
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    f.fake
        .update_faults(|x| {
            x.busy_probability = 0.0;
            x.http500_probability = 0.0;
        })
        .unwrap();
    f.wait_complete("wechat", Duration::from_secs(120)).await;
    f.check("wechat", &reachable, 300).await;
    no_form_id_twice(&f);
    let errors = f
        .fake
        .requests()
        .iter()
        .filter(|r| r.errcode != Some(0))
        .count();
    println!(
        "WeChat misbehaving: {errors} failed answers, campaign complete in {} ms, nobody twice",
        started.elapsed().as_millis()
    );
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_serves_health_readiness_and_metrics() {
    let mut f = Fleet::new("ops_endpoints", 100_000, 1000).await;
    let reachable = f.users(0, 50, 1).await;
    let addr = free_addr();
    let a = addr.to_string();
    f.start_with("all", &[("WXPUSH_HTTP_ADDR", &a)]);
    assert!(eventually(Duration::from_secs(20), || is_ready(addr)).await);
    let (status, body) = http_get(addr, "/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    let (_, ready) = http_get(addr, "/readyz").await.unwrap();
    let mut ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    // What Redis's settings can lose, as read at start (the CI Redis runs without AOF).
    let durability = ready["redis_durability"].take();
    assert_eq!(
        durability["appendonly"] == "no",
        durability["at_risk"] == true,
        "{durability}"
    );
    assert_eq!(durability["maxmemory_policy"], "noeviction", "{durability}");
    ready.as_object_mut().unwrap().remove("redis_durability");
    assert_eq!(
        ready,
        json!({"ready": true, "redis": true,
               "consuming": {"dispatch": true, "ingest": true, "send": true}})
    );
    f.publish_campaign(campaign("ops", json!({"all": true})))
        .await;
    f.wait_complete("ops", Duration::from_secs(60)).await;
    f.check("ops", &reachable, 50).await;
    let (status, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    // A job parked for a moment is consumed again: on a loaded machine's clusters a sender's
    // claims can outlast the rate permit's 50 ms five times in a row (the fence), and the job
    // waits 1 s. Each of the 50 jobs was consumed at least once.
    let consumed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wxpush_messages_consumed_total{queue=\"send\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        consumed >= 50,
        "/metrics: {consumed} send jobs consumed:\n{metrics}"
    );
    for line in [
        "wxpush_messages_consumed_total{queue=\"dispatch\"} 1" as &str,
        "wxpush_send_outcomes_total{outcome=\"sent\"} 50",
        "wxpush_claims_total{result=\"fresh\"} 50",
        &format!("wxpush_wechat_calls_total{{api=\"template\",app=\"{TEST_APP}\",code=\"0\"}} 50"),
        "wxpush_campaign_jobs_published_total 50",
        "wxpush_campaigns_dispatched_total 1",
        "wxpush_token_refreshes_total 1",
        "wxpush_consuming{role=\"send\"} 1",
        "wxpush_dependency_up{dependency=\"redis\"} 1",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    assert!(
        metrics.contains("wxpush_wechat_call_duration_seconds_bucket{api=\"template\",le=\"0.1\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("# HELP wxpush_claims_total"), "{metrics}");
    f.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_carry_job_spans_and_never_a_secret_or_token() {
    let mut f = Fleet::new("ops_secrets", 100_000, 1000).await;
    let reachable = f.users(0, 20, 1).await;
    let i = f.start_with(
        "all",
        &[("WXPUSH_LOG", "trace"), ("WXPUSH_LOG_FORMAT", "json")],
    );
    let log = CapturedStderr::take(&mut f.children[i]);
    f.publish_campaign(campaign("secrets", json!({"all": true})))
        .await;
    f.wait_complete("secrets", Duration::from_secs(60)).await;
    f.check("secrets", &reachable, 20).await;
    f.stop_all();
    let text = log.text();
    let tokens = f.fake.issued_tokens();
    assert!(!tokens.is_empty(), "a token was issued");
    // Other crates log nothing above INFO (src/ops.rs); wxpush's own DEBUG lines are there,
    // one per WeChat send at least.
    let verbose = text
        .lines()
        .filter(|l| l.contains("\"level\":\"DEBUG\"") || l.contains("\"level\":\"TRACE\""))
        .count();
    assert!(verbose >= 20, "trace output was captured: {text}");
    assert!(
        !text.contains(wxpush_testkit::fleet::SECRET),
        "the app secret reached the log"
    );
    for t in &tokens {
        assert!(
            !text.contains(t.as_str()),
            "an access token reached the log"
        );
    }
    // JSON lines, and each outcome line carries its job's span: campaign and masked openId.
    let outcomes: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "send outcome")
        .collect();
    assert_eq!(outcomes.len(), 20, "one outcome line per job");
    for o in &outcomes {
        let span = &o["span"];
        assert_eq!(span["name"], "job", "{o}");
        assert_eq!(span["campaign"], "secrets", "{o}");
        let user = span["user"].as_str().unwrap_or_default();
        assert!(user.contains('…'), "masked: {o}");
        assert!(!reachable.iter().any(|r| r == user), "masked: {o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_consumer_is_cancelled_consumes_again() {
    // Deleting the send queue makes RabbitMQ cancel the consumer: its deliveries end without
    // an error. The sender must take that as an outage (not as a clean stop, after which it
    // exited 0) and consume again, declaring the queue anew.
    let mut f = Fleet::new("consumer_cancel", 1000, 100).await;
    let addr = free_addr();
    let a = addr.to_string();
    let sender = f.start_with("send", &[("WXPUSH_HTTP_ADDR", &a)]);
    let ready = || is_ready(addr);
    assert!(eventually(Duration::from_secs(20), ready).await);
    let queue = f.env.topology().send_queue();
    let ch = f.deps.broker.channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = ch.close(200, "ok".into()).await;
    let back = eventually(Duration::from_secs(20), || async {
        f.deps
            .broker
            .queue_ready(&queue)
            .await
            .ok()
            .flatten()
            .is_some()
            && ready().await
    })
    .await;
    assert!(
        f.running(sender),
        "the sender exited when its consumer was cancelled"
    );
    assert!(back, "the sender declared its queue and consumes again");
    // And it sends: a campaign dispatched now reaches WeChat.
    let users = f.users(0, 3, 1).await;
    f.start("dispatch");
    f.publish_campaign(campaign("after-cancel", json!({"openIds": users})))
        .await;
    f.wait_complete("after-cancel", Duration::from_secs(30))
        .await;
    f.check("after-cancel", &users, 3).await;
    f.stop_all();
}

/// The value of one metric line (`name{labels} value`) in a `/metrics` text, 0 if absent.
fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Sends `signal` (`-STOP`, `-CONT`) to child `i`.
fn signal(f: &Fleet, i: usize, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &f.children[i].id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {signal}");
}

/// Issue 12: a sender stopped (SIGSTOP) with calls in flight, for longer than its 20 s leases
/// and its AMQP heartbeat, so the other sender gets its jobs and takes its leases over; then
/// resumed (SIGCONT) while the other one's resend of one of those credentials is itself in
/// flight. WeChat answers slowly (the stopped one's calls are on the wire: WeChat delivered
/// them, the replies wait in its sockets). Two users in three hold formIds, one prepayIds.
///
/// Checked: no user got two messages (the fake's `delivered`); every formId user got one;
/// every recipient has one outcome; a taken-over formId was refused its second use and
/// prepayIds in doubt were settled without a call; every lease the other sender took over
/// ends `superseded` in the resumed sender (its own metrics): its stale attempt's next step
/// (the settle or release after its call timed out) was refused. Without the settle's owner
/// check that step goes through and this fails; the claim's owner check is not on this path
/// (`tests/e2e/kinds.rs` checks both in Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_stopped_past_its_leases_is_fenced_when_it_resumes() {
    let mut f = Fleet::new("fault_sigstop", 40, 100).await;
    let forms = f.users(0, 120, 2).await;
    let prepays = f.prepay_users(0, 60, 1).await;
    // A short heartbeat: RabbitMQ hands the stopped sender's jobs over within seconds.
    let amqp = amqp_with("heartbeat=3");
    let addr = free_addr();
    let a = addr.to_string();
    f.start("dispatch");
    let stopped = f.start_with(
        "send",
        &[("WXPUSH_AMQP_URL", &amqp), ("WXPUSH_HTTP_ADDR", &a)],
    );
    let other = free_addr();
    let o = other.to_string();
    f.start_with(
        "send",
        &[("WXPUSH_AMQP_URL", &amqp), ("WXPUSH_HTTP_ADDR", &o)],
    );
    assert!(eventually(Duration::from_secs(20), || is_ready(addr)).await);
    f.fake.update_faults(|x| x.latency_ms = 2000).unwrap();
    // Two formId users, then a prepayId user, and again: RabbitMQ hands the jobs round robin
    // to the two senders, so each has both kinds on the wire.
    let mut prepay_it = prepays.iter();
    let audience: Vec<&String> = forms
        .chunks(2)
        .flat_map(|two| two.iter().chain(prepay_it.next()))
        .collect();
    f.publish_campaign(campaign("stop", json!({ "openIds": audience })))
        .await;
    // The stopped-to-be sender has claimed credentials for 30 users (its own metrics): with
    // WeChat answering in 2 s, most of those calls are on the wire. (2 s is well within the
    // 5 s timeout even on a loaded machine: the other sender never resumes a call of its own,
    // so its held claims below are all takeovers.)
    let claimed = || async {
        let text = http_get(addr, "/metrics")
            .await
            .map(|(_, t)| t)
            .unwrap_or_default();
        metric(&text, "wxpush_claims_total{result=\"fresh\"}")
    };
    assert!(eventually(Duration::from_secs(30), || async { claimed().await >= 30 }).await);
    signal(&f, stopped, "-STOP");
    let stopped_at = Instant::now();
    let requests_at_stop = f.fake.requests().len();
    // Past the leases; then wait for the other sender to resend a formId the stopped one had
    // on the wire (a second call with the same formId), and resume the stopped one while that
    // resend is in flight: its lease is the other sender's now.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let taken_over = eventually(Duration::from_secs(30), || async {
        let mut seen = HashSet::new();
        f.fake
            .requests()
            .iter()
            .filter_map(|r| r.form_id.clone())
            .any(|id| !seen.insert(id))
    })
    .await;
    signal(&f, stopped, "-CONT");
    let stopped_for = stopped_at.elapsed();
    assert!(taken_over, "the other sender took a stalled lease over");
    f.fake.update_faults(|x| x.latency_ms = 0).unwrap();
    f.wait_complete("stop", Duration::from_secs(120)).await;
    // The resumed one's attempts have all ended (they were in flight when it stopped).
    tokio::time::sleep(Duration::from_secs(6)).await;

    let delivered = f.delivered_per_user();
    assert!(
        delivered.values().all(|&n| n == 1),
        "a user got two messages: {:?}",
        delivered
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect::<Vec<_>>()
    );
    for who in &forms {
        assert_eq!(delivered.get(who), Some(&1), "{who} got no message");
    }
    no_form_id_twice(&f);
    let c = f.counts("stop").await;
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(
        get("sent") + get("sent_unconfirmed"),
        audience.len() as u64,
        "one outcome each: {c:?}"
    );
    let finished: u64 = c
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "retried" | "duplicate"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(finished, audience.len() as u64, "{c:?}");
    let total: u64 = delivered.values().sum();
    assert!(get("sent") <= total, "every `sent` was delivered: {c:?}");
    let refused_again = f
        .fake
        .requests()
        .iter()
        .filter(|r| r.errcode == Some(41029))
        .count();
    assert!(
        refused_again >= 1,
        "a taken-over formId was refused the second time"
    );
    assert!(
        get("sent_unconfirmed") > refused_again as u64,
        "prepayIds in doubt were settled without a call too: {c:?}"
    );
    let (_, metrics) = http_get(addr, "/metrics")
        .await
        .expect("the resumed sender answers");
    let superseded = metric(
        &metrics,
        "wxpush_send_outcomes_total{outcome=\"superseded\"}",
    );
    let fenced = metric(&metrics, "wxpush_send_fenced_total");
    // The other sender's takeovers: its claims that found a credential whose lease another
    // attempt let run out without releasing it (the bank tells these apart from a resume of
    // a credential released in doubt: an attempt of the resumed sender that reached its
    // release before the other sender came back for the user settles as it should, and that
    // later resume is not a takeover).
    let (_, other_metrics) = http_get(other, "/metrics")
        .await
        .expect("the other sender answers");
    let taken = metric(&other_metrics, "wxpush_claims_total{result=\"taken_over\"}");
    assert!(taken >= 1, "the other sender took leases over");
    // Each attempt whose lease was taken over is refused at its next step (a renewed claim,
    // a settle, a release) and ends `superseded`, whether its lease is then still running
    // (the other sender's resend in flight) or settled already. Unless the resumed sender's
    // session restarted first (its Redis commands timed out on waking: seen on a Redis
    // Cluster, whose client's timers all fire at once after the stop): a restart drops every
    // attempt in flight unsettled, their jobs go back to the queue, and each finds its
    // recipient settled (the once-per-user checks above hold either way).
    let restarted = metric(&metrics, "wxpush_sessions_restarted_total{role=\"send\"}");
    assert!(
        superseded >= taken || restarted > 0,
        "the resumed sender's stale attempts were refused: {superseded} superseded for \
         {taken} leases taken over, {fenced} calls fenced on time, {restarted} session restarts"
    );
    println!(
        "SIGSTOP for {} ms after {} requests: {} users, {} delivered once each, 0 twice; \
         {taken} leases taken over, {refused_again} taken-over formIds refused (41029); the \
         resumed sender: {superseded} attempts superseded, {fenced} calls fenced on time, \
         {restarted} session restarts; counts {c:?}",
        stopped_for.as_millis(),
        requests_at_stop,
        audience.len(),
        total
    );
    f.stop_all();
}

/// What the sender soak did to the fleet and to WeChat, for its closing line.
#[derive(Debug, Default)]
struct SoakTally {
    kills: u32,
    stops: u32,
    /// Stops longer than the 20 s campaign lease.
    long_stops: u32,
    lost_reply_spells: u32,
    slow_spells: u32,
    token_outages: u32,
    send_outages: u32,
}

/// One random fault on WeChat's side for the next few seconds (the previous one cleared).
fn wechat_spell(f: &Fleet, t: &mut SoakTally) {
    f.fake
        .update_faults(|x| *x = wxpush_fake_wechat::Faults::default())
        .unwrap();
    match fastrand::u8(0..6) {
        0 | 1 => {
            t.lost_reply_spells += 1;
            let mode = match fastrand::u8(0..3) {
                0 => wxpush_fake_wechat::LostReplyMode::Status,
                1 => wxpush_fake_wechat::LostReplyMode::Reset,
                _ => wxpush_fake_wechat::LostReplyMode::Hang,
            };
            f.fake
                .update_faults(|x| {
                    x.lost_reply_probability = 0.05 + fastrand::f64() * 0.25;
                    x.lost_reply_mode = mode;
                    x.lost_reply_status = [500, 502, 503, 504][fastrand::usize(0..4)];
                    x.lost_reply_hang_ms = 6_000;
                })
                .unwrap();
        }
        2 => {
            t.slow_spells += 1;
            f.fake
                .update_faults(|x| {
                    x.latency_ms = fastrand::u64(200..2_500);
                    x.latency_jitter_ms = 3_000;
                    x.busy_probability = 0.05;
                })
                .unwrap();
        }
        3 => {
            t.token_outages += 1;
            f.fake
                .token_outage(Duration::from_secs(fastrand::u64(2..8)));
            let _ = f.fake.expire_tokens(None);
            f.fake
                .update_faults(|x| x.token_latency_ms = 1_500)
                .unwrap();
        }
        4 => {
            t.send_outages += 1;
            let until = now_ms() as u64 + fastrand::u64(1_000..6_000);
            f.fake
                .update_faults(|x| {
                    x.outage_status = Some(503);
                    x.outage_until_ms = Some(until);
                })
                .unwrap();
        }
        _ => {}
    }
}

/// Deliveries per (user, campaign) as WeChat's side counted them: each campaign's message
/// carries its id as `keyword1`.
fn deliveries_per_campaign(f: &Fleet) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for r in f.fake.requests().into_iter().filter(|r| r.delivered) {
        let campaign = r
            .data
            .as_ref()
            .and_then(|d| d["keyword1"]["value"].as_str())
            .unwrap_or("?")
            .to_owned();
        *m.entry((r.touser.unwrap_or_default(), campaign))
            .or_default() += 1;
    }
    m
}

/// The senders' soak (issue 12): campaign after campaign to users holding formIds and users
/// holding prepayIds, while every 0.3-1.5 s one of: a random sender (sometimes the dispatcher)
/// SIGKILLed and restarted, a random sender SIGSTOPped for 1-35 s (past its leases half the
/// time) then SIGCONTed, or WeChat turning faulty for a while (replies lost after delivery as
/// 5xx, resets or hangs; slow and jittery replies; token outages; send outages). Then every
/// campaign completes with the faults off, and the check: WeChat's deliveries per user per
/// campaign, never two.
async fn soak_senders(secs: u64) {
    let mut config = wxpush_testkit::fleet::fake_config();
    config.max_recorded_requests = 2_000_000;
    let mut f = Fleet::with_fake("fault_soak_send", 300, 200, config).await;
    // Retries come back within seconds, not the default quarter of an hour: a campaign whose
    // jobs met an outage completes within the run.
    f.env.set("WXPUSH_SEND_RETRY_MAX_DELAY", "10s");
    let forms = f.users(0, 2_000, 10).await;
    let prepays = f.prepay_users(0, 2_000, 3).await;
    let audience: Vec<&String> = forms.iter().chain(&prepays).collect();
    // A short heartbeat: a stopped sender's jobs go to the others within seconds.
    let amqp = amqp_with("heartbeat=5");
    let vars = [("WXPUSH_AMQP_URL", amqp.as_str())];
    // Every role's log, read as it is written: a long-lived role that warns a lot never
    // blocks on a full pipe, and a campaign that does not complete shows why.
    let mut logs: BTreeMap<usize, CapturedStderr> = BTreeMap::new();
    let mut start = |f: &mut Fleet, role: &str| {
        let i = f.start_with(role, if role == "send" { &vars[..] } else { &[] });
        logs.insert(i, CapturedStderr::take(&mut f.children[i]));
        i
    };
    let mut senders: Vec<usize> = (0..3).map(|_| start(&mut f, "send")).collect();
    let mut dispatcher = start(&mut f, "dispatch");
    // Stopped senders (child index) and when to resume them.
    let mut stopped: Vec<(usize, Instant)> = Vec::new();
    let mut t = SoakTally::default();
    let mut campaigns: Vec<String> = Vec::new();
    // Each campaign's message carries its id (keyword1): deliveries are told apart by it.
    let soak_campaign = |id: &str| {
        let mut c = campaign(id, json!({ "openIds": audience }));
        c["keywords"] = json!(format!("{id},Tap to keep your streak"));
        c
    };
    let started = Instant::now();
    let mut said = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        if said.elapsed() > Duration::from_secs(30) {
            said = Instant::now();
            println!(
                "soak: {} s, campaign {} {:?}, {t:?}",
                started.elapsed().as_secs(),
                campaigns.len(),
                f.counts(campaigns.last().map_or("", String::as_str)).await
            );
        }
        // One campaign at a time in flight, plus the next once it is done.
        let current_done = match campaigns.last() {
            Some(id) => f.complete(id).await,
            None => true,
        };
        if current_done {
            let id = format!("soak-{}", campaigns.len());
            f.publish_campaign(soak_campaign(&id)).await;
            campaigns.push(id);
        }
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..1_200))).await;
        let now = Instant::now();
        for (i, _) in stopped.iter().filter(|(_, until)| *until <= now) {
            signal(&f, *i, "-CONT");
        }
        stopped.retain(|(_, until)| *until > now);
        match fastrand::u8(0..10) {
            0..=2 => {
                let k = fastrand::usize(0..senders.len());
                let i = senders[k];
                stopped.retain(|(s, _)| *s != i);
                f.kill(i);
                t.kills += 1;
                senders[k] = start(&mut f, "send");
            }
            3 => {
                f.kill(dispatcher);
                t.kills += 1;
                dispatcher = start(&mut f, "dispatch");
            }
            4..=5 => {
                // At most two of the three stopped at once: work goes on.
                let running: Vec<usize> = senders
                    .iter()
                    .copied()
                    .filter(|i| !stopped.iter().any(|(s, _)| s == i))
                    .collect();
                if running.len() > 1 {
                    let i = running[fastrand::usize(0..running.len())];
                    let pause = Duration::from_millis(fastrand::u64(1_000..35_000));
                    signal(&f, i, "-STOP");
                    t.stops += 1;
                    if pause > Duration::from_secs(20) {
                        t.long_stops += 1;
                    }
                    stopped.push((i, now + pause));
                }
            }
            _ => wechat_spell(&f, &mut t),
        }
    }
    for (i, _) in stopped.drain(..) {
        signal(&f, i, "-CONT");
    }
    f.fake
        .update_faults(|x| *x = wxpush_fake_wechat::Faults::default())
        .unwrap();
    for id in &campaigns {
        if !eventually(Duration::from_secs(300), || f.complete(id)).await {
            for i in senders.iter().chain([&dispatcher]) {
                let text = logs.get(i).map(CapturedStderr::text).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                println!(
                    "role {i}, its last log lines (newest first):\n{}",
                    tail.join("\n")
                );
            }
            panic!("campaign {id} did not complete: {:?}", f.counts(id).await);
        }
    }
    // Attempts of resumed senders still on the wire end within a request timeout.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let per = deliveries_per_campaign(&f);
    // Each recipient's own outcome (the campaign marks) beside WeChat's deliveries to them:
    // `sent` is always exactly one delivery; a formId user in doubt is resent, so recorded
    // `sent_unconfirmed` means WeChat refused the formId's second use: delivered.
    let mut conn = f.deps.bank.connection();
    let mut undelivered = BTreeMap::<&str, u64>::new();
    for (kind, group) in [("formId", &forms), ("prepayId", &prepays)] {
        for who in group {
            let key = f
                .deps
                .bank
                .keys()
                .marks(&f.env.app, &OpenId::new(who).unwrap());
            let marks: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            for id in &campaigns {
                let outcome = marks.get(id).cloned().unwrap_or_default();
                let got = per.get(&(who.clone(), id.clone())).copied().unwrap_or(0);
                if outcome.starts_with("=sent@") {
                    assert_eq!(got, 1, "{who} is `sent` in {id} with {got} deliveries");
                }
                if outcome.starts_with("=sent_unconfirmed@") && got == 0 {
                    *undelivered.entry(kind).or_default() += 1;
                }
            }
        }
    }
    let doubles: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    let deliveries: u64 = per.values().sum();
    let stats = f.fake.stats();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut unconfirmed_undelivered = 0u64;
    for id in &campaigns {
        let c = f.counts(id).await;
        let finished: u64 = c
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "retried" | "duplicate" | "requeued"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(
            finished,
            audience.len() as u64,
            "{id}: one outcome each: {c:?}"
        );
        let delivered_here = per.iter().filter(|((_, cid), _)| cid == id).count() as u64;
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        assert!(
            get("sent") <= delivered_here,
            "{id}: every `sent` was delivered: {c:?}"
        );
        unconfirmed_undelivered +=
            (get("sent") + get("sent_unconfirmed")).saturating_sub(delivered_here);
        for (k, v) in c {
            *totals.entry(k).or_default() += v;
        }
    }
    println!(
        "sender soak, {} s: {} campaigns x {} users ({} formId, {} prepayId users); {deliveries} \
         deliveries at WeChat, {} doubles (same user, same campaign); {} SIGKILLs, {} SIGSTOPs \
         ({} longer than the 20 s lease); WeChat spells: {} lost-reply, {} slow, {} token \
         outages, {} send outages; {} replies lost after delivery; {unconfirmed_undelivered} \
         recorded sent_unconfirmed without a delivery (a call in doubt that had not delivered: a \
         503 outage, a kill or stop between claim and call), by kind {undelivered:?}; \
         outcome counts {totals:?}",
        started.elapsed().as_secs(),
        campaigns.len(),
        audience.len(),
        forms.len(),
        prepays.len(),
        doubles.len(),
        t.kills,
        t.stops,
        t.long_stops,
        t.lost_reply_spells,
        t.slow_spells,
        t.token_outages,
        t.send_outages,
        stats.lost_replies,
    );
    assert!(
        doubles.is_empty(),
        "a user got two messages for one campaign: {doubles:?}"
    );
    // A formId is delivered once ever (a prepayId up to three times, once per campaign).
    let form_users: HashSet<&String> = forms.iter().collect();
    let mut used = HashSet::new();
    for r in f.fake.requests().into_iter().filter(|r| r.delivered) {
        if r.touser.as_ref().is_some_and(|u| form_users.contains(u)) {
            let id = r.form_id.unwrap_or_default();
            assert!(used.insert(id.clone()), "formId {id} delivered twice");
        }
    }
    f.stop_all();
}

/// The senders' soak: `WXPUSH_SOAK_SECS` (default 600) of sender kills and stops and WeChat
/// faults (`scripts/soak.sh senders`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak run: scripts/soak.sh senders"]
async fn soak_senders_stopped_killed_and_wechat_faulty() {
    let secs = std::env::var("WXPUSH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    soak_senders(secs).await;
}
