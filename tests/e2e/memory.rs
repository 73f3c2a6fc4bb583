//! Memory is bounded by bytes, not by message counts: each role, fed the largest *valid*
//! input the contract allows at the prefetch it runs with by default, stays within what
//! `deploy/k8s` gives it (256 MiB), and loses nothing. Peak resident memory is read from the
//! process itself (`VmHWM`), so these are not timed tests: a slow machine passes too.

use std::time::Duration;

use serde_json::json;
use wxpush_domain::config::DEFAULT_USER_CAP;
use wxpush_domain::OpenId;
use wxpush_testkit::{eventually, now_ms, peak_rss_kib, terminate, TestEnv};

/// What `deploy/k8s` gives each role.
const LIMIT_KIB: u64 = 256 * 1024;
const DAY_MS: i64 = 86_400_000;

fn user(n: usize) -> String {
    format!("oMem{n:06}xxxxxxxxxxxxxxxxxxxxxx")
}

/// A valid upload just under the 64 KiB default limit: `prepay` prepayIds of user `n`, each
/// id as long as fits (all well under the 128-byte limit), each with its expiry.
fn big_upload(n: usize, prepay: usize) -> Vec<u8> {
    let expire = now_ms() + 6 * DAY_MS;
    let body = |id_len: usize| {
        let ids: Vec<_> = (0..prepay)
            .map(|i| {
                let id = format!("wx{n:06}{i:04}{}", "0".repeat(id_len));
                json!({"prepayId": id, "expire": expire - i as i64 * 1000})
            })
            .collect();
        json!({"openId": user(n), "prepayIds": ids})
            .to_string()
            .into_bytes()
    };
    let mut len = 100;
    while len > 0 && body(len).len() >= 64 * 1024 {
        len -= 1;
    }
    body(len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_holds_a_backlog_of_the_largest_uploads_within_its_memory_limit() {
    let env = TestEnv::new("mem_ingest");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let users = 2000;
    let bodies: Vec<Vec<u8>> = (0..users).map(|n| big_upload(n, 450)).collect();
    assert!(bodies
        .iter()
        .all(|b| b.len() < 64 * 1024 && b.len() > 60 * 1024));
    env.publish_uploads(&deps.broker, &bodies).await;
    drop(bodies);

    // Every variable at its default: prefetch, batch, user cap, message size.
    let child = env.spawn(&["ingest"]);
    let last = OpenId::new(&user(users - 1)).unwrap();
    let first = OpenId::new(&user(0)).unwrap();
    let cap = u64::from(DEFAULT_USER_CAP);
    let done = eventually(Duration::from_secs(300), || async {
        env.queue_ready(&deps.broker, &env.topology().ingest_queue())
            .await
            == 0
            && deps.bank.usable_count(&env.app, &first).await.unwrap_or(0) == cap
            && deps.bank.usable_count(&env.app, &last).await.unwrap_or(0) == cap
    })
    .await;
    let peak = peak_rss_kib(child.id()).expect("VmHWM of ingest");
    terminate(&child);
    let out = child.wait_with_output().expect("ingest exits");
    assert!(
        done,
        "backlog not stored: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every user stored, each with the cap's worth of credentials (those expiring last).
    for n in (0..users).step_by(97) {
        let who = OpenId::new(&user(n)).unwrap();
        assert_eq!(
            deps.bank.usable_count(&env.app, &who).await.unwrap(),
            cap,
            "{n}"
        );
    }
    eprintln!("ingest peak RSS: {} MiB", peak / 1024);
    assert!(
        peak < LIMIT_KIB,
        "ingest peaked at {} MiB on a valid backlog (limit {} MiB)",
        peak / 1024,
        LIMIT_KIB / 1024
    );
}

/// The dispatcher holds one campaign at a time: what it costs must follow the campaign's size
/// (1 MiB at most), not how many entries or how much data each job repeats. Two of the largest
/// valid campaigns: a 1 MiB list whose entries are nearly all rejected (each rejection a
/// record kept before), and 32 KiB of template data (the most a campaign may carry) copied
/// into each of 3,000 jobs (a page of 1,000 was built whole before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_holds_the_largest_campaigns_within_a_few_times_their_size() {
    let env = TestEnv::new("mem_dispatch");
    let deps = env.deps().await;
    let ch = deps.broker.channel().await.unwrap();
    env.topology().declare_dispatch(&ch).await.unwrap();
    let _ = ch.close(200, "ok".into()).await;
    let child = env.spawn(&["dispatch"]);
    let publisher = wxpush_broker::Publisher::open(&deps.broker, env.topology())
        .await
        .unwrap();
    let publish = |c: serde_json::Value| {
        let body = c.to_string().into_bytes();
        assert!(body.len() <= 1024 * 1024, "{} bytes", body.len());
        let p = &publisher;
        let exchange = env.topology().campaigns_exchange();
        async move {
            p.publish(&exchange, "c", &body, Default::default())
                .await
                .unwrap()
        }
    };
    // 1: a 1 MiB list of ~520,000 entries, one of them valid.
    let mut list = vec![json!(1); 1024 * 1024 / 2 - 64];
    list[0] = json!(user(0));
    publish(
        json!({"campaignId": "rejects", "templateId": "T", "keywords": "a",
                   "audience": {"openIds": list}}),
    )
    .await;
    // 2: 32 KiB of data, the most a campaign may carry, to 3,000 users.
    let data: serde_json::Map<String, serde_json::Value> = (0..16)
        .map(|i| (format!("keyword{i}"), json!("x".repeat(2000))))
        .collect();
    let users: Vec<String> = (0..3000).map(user).collect();
    publish(
        json!({"campaignId": "wide", "templateId": "T", "data": data,
                   "audience": {"openIds": users}}),
    )
    .await;
    let send = env.topology().send_queue();
    let done = eventually(Duration::from_secs(120), || async {
        env.queue_ready(&deps.broker, &send).await == 3001
    })
    .await;
    let peak = peak_rss_kib(child.id()).expect("VmHWM of dispatch");
    terminate(&child);
    let out = child.wait_with_output().expect("dispatch exits");
    assert!(
        done,
        "jobs not published: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("dispatch peak RSS: {} MiB", peak / 1024);
    assert!(peak < 48 * 1024, "dispatch peaked at {} MiB", peak / 1024);
}

/// A sender prefetches twice its concurrency; each job may carry the largest valid data (32
/// KiB of template data, copied from its campaign). Its memory follows that, and a job larger
/// than any campaign could make is dead-lettered before it is parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_holds_its_prefetch_of_the_largest_jobs_and_refuses_larger_ones() {
    let mut f = wxpush_testkit::fleet::Fleet::new("mem_send", 100_000, 1000).await;
    let users = f.users(0, 1000, 1).await;
    let data: serde_json::Map<String, serde_json::Value> = (0..16)
        .map(|i| (format!("keyword{i}"), json!("\u{1}".repeat(2000))))
        .collect();
    let jobs: Vec<Vec<u8>> = users
        .iter()
        .map(|u| {
            json!({"campaignId": "wide", "openId": u, "templateId": wxpush_testkit::fleet::TPL,
                   "data": data})
            .to_string()
            .into_bytes()
        })
        .collect();
    let topology = f.env.topology();
    let ch = f.deps.broker.channel().await.unwrap();
    topology.declare_send(&ch).await.unwrap();
    let _ = ch.close(200, "ok".into()).await;
    let publisher = wxpush_broker::Publisher::open(&f.deps.broker, topology.clone())
        .await
        .unwrap();
    let send = topology.send_queue();
    for chunk in jobs.chunks(100) {
        publisher
            .publish_all("", chunk.iter().map(|b| (send.as_str(), b.as_slice())))
            .await
            .unwrap();
    }
    // And one far larger than any campaign makes.
    let huge = json!({"campaignId": "huge", "openId": users[0], "templateId": "T",
                      "data": {"keyword1": "y".repeat(300_000)}});
    publisher
        .publish("", &send, huge.to_string().as_bytes(), Default::default())
        .await
        .unwrap();
    let i = f.start("send");
    let pid = f.children[i].id();
    let all_sent = || {
        let sent = f.accepted_per_user();
        users.iter().all(|u| sent.get(u) == Some(&1))
    };
    let done = eventually(Duration::from_secs(120), || async {
        all_sent() && f.env.queue_ready(&f.deps.broker, &send).await == 0
    })
    .await;
    let peak = peak_rss_kib(pid).expect("VmHWM of send");
    f.stop_all();
    assert!(done, "not every job sent once");
    let dead = f.env.drain_dead_letters(&f.deps.broker, "send").await;
    assert_eq!(
        dead.len(),
        1,
        "{:?}",
        dead.iter().map(|d| &d.1).collect::<Vec<_>>()
    );
    assert_eq!(dead[0].1, "too_large");
    eprintln!("send peak RSS: {} MiB", peak / 1024);
    assert!(peak < 96 * 1024, "send peaked at {} MiB", peak / 1024);
}
