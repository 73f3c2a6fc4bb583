//! What Redis's own settings can lose, against a private `redis-server` of each test's own
//! ([`PrivateRedis`]): the start-up check (an evicting `maxmemory-policy` refuses the start
//! unless allowed, `/readyz` says why Redis is at risk) and `WXPUSH_REDIS_WAIT_REPLICAS`
//! (an upload or a settled outcome is acknowledged to RabbitMQ only once a replica has it).

use std::time::Duration;

use serde_json::json;
use wxpush_domain::{Credential, OpenId, SendJob};
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeHandle, FakeWeChat};
use wxpush_roles::ingest::{self, IngestSettings};
use wxpush_roles::send::{self, SendParts, SendSettings};
use wxpush_roles::{Deps, Health, ShutdownTrigger};
use wxpush_testkit::private_redis::PrivateRedis;
use wxpush_testkit::{
    eventually, form_id, free_addr, http_get, now_ms, CapturedStderr, TestEnv, TEST_APP,
};

/// `/readyz`'s body once it answers 200 (20 s at most).
async fn ready_body(addr: std::net::SocketAddr) -> Option<String> {
    for _ in 0..200 {
        if let Some((200, b)) = http_get(addr, "/readyz").await {
            return Some(b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn user(n: usize) -> String {
    format!("oDurable{n:05}xxxxxxxxxxxxxxxx")
}

/// The exit status and stderr of `wxpush ingest` run until it exits (10 s at most).
fn run_to_exit(env: &TestEnv, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = env.spawn_with(&["ingest"], vars);
    let err = CapturedStderr::take(&mut child);
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            return (status.code(), err.text());
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, err.text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_refuses_the_start_unless_allowed_and_readyz_says_why() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "volatile-lru"]);
    let mut env = TestEnv::new("durable_evict");
    env.set("WXPUSH_REDIS_URL", &redis.url());

    let (code, err) = run_to_exit(&env, &[]);
    assert_eq!(code, Some(1), "refused with a failure exit: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("wxpush: Redis's maxmemory-policy is volatile-lru")
            && lines[0].contains("WXPUSH_REDIS_ALLOW_EVICTION=1"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );

    // Allowed: it starts, and /readyz says why Redis is at risk.
    let addr = free_addr();
    let mut child = env.spawn_with(
        &["ingest"],
        &[
            ("WXPUSH_REDIS_ALLOW_EVICTION", "1"),
            ("WXPUSH_HTTP_ADDR", &addr.to_string()),
        ],
    );
    let log = CapturedStderr::take(&mut child);
    let body = ready_body(addr).await;
    let ready = body.is_some();
    let body = body.unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "ready with eviction allowed: {}", log.text());
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let d = &v["redis_durability"];
    assert_eq!(d["maxmemory_policy"], "volatile-lru", "{body}");
    assert_eq!(d["appendonly"], "no", "{body}");
    assert_eq!(d["at_risk"], true, "{body}");
    let risks: Vec<&str> = d["risks"]
        .as_array()
        .expect("risks")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        risks.iter().any(|r| r.contains("volatile-lru"))
            && risks.iter().any(|r| r.contains("appendonly is no")),
        "{body}"
    );
    let text = log.text();
    assert!(
        text.contains("Redis can lose acknowledged data: maxmemory-policy is volatile-lru"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_keeps_what_it_acknowledges_is_not_at_risk() {
    let redis = PrivateRedis::start(&["--appendonly", "yes", "--maxmemory-policy", "noeviction"]);
    let mut env = TestEnv::new("durable_safe");
    env.set("WXPUSH_REDIS_URL", &redis.url());
    let addr = free_addr();
    let mut child = env.spawn_with(&["ingest"], &[("WXPUSH_HTTP_ADDR", &addr.to_string())]);
    let log = CapturedStderr::take(&mut child);
    let body = ready_body(addr).await;
    let ready = body.is_some();
    let body = body.unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "{}", log.text());
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["redis_durability"]["at_risk"], false, "{body}");
    assert_eq!(v["redis_durability"]["appendonly"], "yes", "{body}");
    assert!(!log.text().contains("can lose"), "{}", log.text());
}

/// Credentials of `who` on `redis` (ZCARD of their key), read there directly.
fn held_on(redis: &PrivateRedis, env: &TestEnv, who: &str) -> u64 {
    let keys = wxpush_bank::Keys::new(env.ns.clone());
    let key = keys.credentials(&env.app, &OpenId::new(who).unwrap());
    redis
        .cmd_sync(&["ZCARD", &key])
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn upload(n: usize) -> Vec<u8> {
    let ids: Vec<_> = (0..3)
        .map(|i| json!({"formId": form_id(n as u64, i), "expire": now_ms() + 86_400_000}))
        .collect();
    json!({"openId": user(n), "formIds": ids})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_acknowledged_only_once_a_replica_has_them() {
    let master = PrivateRedis::start(&[]);
    let mut replica = PrivateRedis::replica_of(&master, &[]);
    let mut env = TestEnv::new("durable_wait_ingest");
    env.set("WXPUSH_REDIS_URL", &master.url());
    env.set("WXPUSH_REDIS_WAIT_REPLICAS", "1");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let queue = env.topology().ingest_queue();

    let (trigger, shutdown) = ShutdownTrigger::new();
    let settings = IngestSettings::from_config(&env.config());
    let (d, t) = (deps.clone(), env.topology());
    let role =
        tokio::spawn(async move { ingest::run(&d, &t, &settings, &Health::new(), shutdown).await });

    // A live replica: stored, acknowledged, and on the replica.
    env.publish_uploads(&deps.broker, &[upload(0), upload(1)])
        .await;
    let landed = eventually(Duration::from_secs(15), || async {
        held_on(&replica, &env, &user(0)) == 3 && held_on(&replica, &env, &user(1)) == 3
    })
    .await;
    assert!(landed, "stored and on the replica");
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.queue_ready(&deps.broker, &queue).await == 0
        })
        .await
    );

    // The replica down: stored on the primary, never acknowledged, handed back.
    replica.stop();
    env.publish_uploads(&deps.broker, &[upload(2), upload(3)])
        .await;
    let on_primary = eventually(Duration::from_secs(10), || async {
        held_on(&master, &env, &user(2)) == 3 && held_on(&master, &env, &user(3)) == 3
    })
    .await;
    assert!(on_primary, "written to the primary");
    let handed_back = eventually(Duration::from_secs(20), || async {
        env.queue_ready(&deps.broker, &queue).await == 2
    })
    .await;
    assert!(
        handed_back,
        "not acknowledged while no replica has them: back in the queue"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.queue_ready(&deps.broker, &queue).await,
        2,
        "still not acknowledged"
    );

    // The replica back: they land there and are acknowledged.
    replica.restart();
    let landed = eventually(Duration::from_secs(30), || async {
        env.queue_ready(&deps.broker, &queue).await == 0
            && held_on(&replica, &env, &user(2)) == 3
            && held_on(&replica, &env, &user(3)) == 3
    })
    .await;
    trigger.trigger();
    let stats = role.await.unwrap().unwrap();
    assert!(landed, "acknowledged once the replica is back");
    assert_eq!(stats.messages, 4, "{stats:?}");
    assert_eq!(stats.dead_lettered_total(), 0);
}

const SECRET: &str = "test-secret-0123456789";
const TPL: &str = "TPL_SIGNIN";

/// A sending install on `master`, with `WXPUSH_REDIS_WAIT_REPLICAS=1` and `fake` as WeChat.
fn send_env(name: &str, master: &PrivateRedis, fake: &FakeHandle) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.set("WXPUSH_REDIS_URL", &master.url());
    env.set("WXPUSH_REDIS_WAIT_REPLICAS", "1");
    env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
    env.set("WXPUSH_APP_SECRET", SECRET);
    env.set("WXPUSH_SEND_RATE", "1000");
    env
}

/// Queues one template job of campaign `campaign` to `who` and starts the send role on it
/// (WeChat calls time out after `call_timeout`). Returns the send queue, the trigger that
/// stops the role, and its task.
async fn send_one_job(
    env: &TestEnv,
    deps: &Deps,
    campaign: &str,
    who: &str,
    call_timeout: Duration,
) -> (
    String,
    ShutdownTrigger,
    tokio::task::JoinHandle<Result<std::sync::Arc<send::SendStats>, wxpush_roles::RoleError>>,
) {
    let ch = deps.broker.channel().await.unwrap();
    env.topology().declare_send(&ch).await.unwrap();
    let _ = ch.close(200, "ok".into()).await;
    let job: SendJob = serde_json::from_value(json!({
        "campaignId": campaign, "openId": who, "templateId": TPL,
        "page": "pages/signin/index", "data": {"keyword1": "Daily check-in"}
    }))
    .unwrap();
    let p = wxpush_broker::Publisher::open(&deps.broker, env.topology())
        .await
        .unwrap();
    let q = env.topology().send_queue();
    p.publish_all("", [(q.as_str(), job.to_json().as_slice())])
        .await
        .unwrap();
    p.close().await;

    let parts = SendParts::connect(&env.config(), deps, call_timeout)
        .await
        .unwrap();
    let settings = SendSettings::from_config(&env.config());
    let (trigger, shutdown) = ShutdownTrigger::new();
    let (d, t) = (deps.clone(), env.topology());
    let role =
        tokio::spawn(
            async move { send::run(&d, parts, &t, &settings, &Health::new(), shutdown).await },
        );
    (q, trigger, role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_outcome_is_acknowledged_only_once_a_replica_has_it() {
    let master = PrivateRedis::start(&[]);
    let mut replica = PrivateRedis::replica_of(&master, &[]);
    let mut fake_config =
        FakeConfig::with_apps(vec![FakeApp::new(TEST_APP, SECRET).with_templates([TPL])]);
    // Time to stop the replica between the claim and the settle.
    fake_config.faults.latency_ms = 3000;
    let fake = FakeWeChat::start(fake_config).await.expect("fake WeChat");
    let env = send_env("durable_wait_send", &master, &fake);
    let deps = env.deps().await;
    let who = user(7);
    let ids = fake
        .issue_form_ids(None, &who, 2, Some(Duration::from_secs(3600)))
        .unwrap();
    let now = now_ms() / 1000;
    let creds: Vec<Credential> = ids
        .iter()
        .map(|f| Credential::form_id(f.clone(), now + 3600))
        .collect();
    let open_id = OpenId::new(&who).unwrap();
    deps.bank.store(&env.app, &open_id, &creds).await.unwrap();

    let (q, trigger, role) = send_one_job(&env, &deps, "cw", &who, Duration::from_secs(8)).await;
    // The claim is made (and replicated) and the call is under way: the replica goes.
    let marks = deps.bank.keys().marks(&env.app, &open_id);
    let claimed = eventually(Duration::from_secs(10), || async {
        replica.cmd_sync(&["HGET", &marks, "cw"]).as_deref() == Some("L")
    })
    .await;
    assert!(claimed, "claimed, and the claim on the replica");
    replica.stop();
    let counts = || async { wxpush_testkit::campaign_counts(&deps.bank, &env.app, "cw").await };
    let settled = eventually(Duration::from_secs(15), || async {
        counts().await.get("sent") == Some(&1)
    })
    .await;
    assert!(settled, "settled on the primary: {:?}", counts().await);
    let handed_back = eventually(Duration::from_secs(15), || async {
        env.queue_ready(&deps.broker, &q).await == 1
    })
    .await;
    assert!(
        handed_back,
        "not acknowledged while no replica has the outcome"
    );

    replica.restart();
    let acked = eventually(Duration::from_secs(30), || async {
        env.queue_ready(&deps.broker, &q).await == 0
            && replica
                .cmd_sync(&["HGET", &marks, "cw"])
                .is_some_and(|s| s.starts_with("=sent@"))
    })
    .await;
    trigger.trigger();
    let _ = role.await;
    assert!(acked, "acknowledged once the replica has the outcome");
    let delivered = fake.requests().iter().filter(|r| r.delivered).count();
    assert_eq!(delivered, 1, "one message, whatever was handed back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_denies_config_is_unknown_not_fatal() {
    let redis = PrivateRedis::start(&["--rename-command", "CONFIG", ""]);
    let mut env = TestEnv::new("durable_denied");
    env.set("WXPUSH_REDIS_URL", &redis.url());
    let addr = free_addr();
    let mut child = env.spawn_with(&["ingest"], &[("WXPUSH_HTTP_ADDR", &addr.to_string())]);
    let log = CapturedStderr::take(&mut child);
    let body = ready_body(addr).await;
    let _ = child.kill();
    let _ = child.wait();
    let body = body.unwrap_or_else(|| panic!("starts: {}", log.text()));
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let d = &v["redis_durability"];
    assert_eq!(
        (d["appendonly"].as_str(), d["maxmemory_policy"].as_str()),
        (Some("unknown"), Some("unknown")),
        "{body}"
    );
    assert_eq!(d["at_risk"], false, "{body}");
    let text = log.text();
    for name in ["appendonly", "maxmemory-policy"] {
        let said = format!("cannot read Redis's {name} (CONFIG denied?)");
        assert_eq!(text.matches(&said).count(), 1, "logged once: {text}");
    }
}

/// A batch stored while the replica is away is not written again while ingest waits for it
/// (a subscribe consent written twice would count twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_a_replica_is_not_written_again() {
    let master = PrivateRedis::start(&[]);
    let mut replica = PrivateRedis::replica_of(&master, &[]);
    let mut env = TestEnv::new("durable_wait_once");
    env.set("WXPUSH_REDIS_URL", &master.url());
    env.set("WXPUSH_REDIS_WAIT_REPLICAS", "1");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let queue = env.topology().ingest_queue();
    let who = user(9);
    // The shard's total of the template: this user's count (the namespace holds no other).
    let consents = deps.bank.keys().consent_totals(
        &env.app,
        wxpush_bank::keys::shard_of(&OpenId::new(&who).unwrap()),
    );
    let count = |r: &PrivateRedis| {
        r.cmd_sync(&["HGET", &consents, "TPL_DURABLE"])
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };

    replica.stop();
    let (trigger, shutdown) = ShutdownTrigger::new();
    let settings = IngestSettings::from_config(&env.config());
    let (d, t) = (deps.clone(), env.topology());
    let role =
        tokio::spawn(async move { ingest::run(&d, &t, &settings, &Health::new(), shutdown).await });
    let body = json!({"openId": who, "subscriptions": {"TPL_DURABLE": "accept"}});
    env.publish_uploads(&deps.broker, &[body.to_string().into_bytes()])
        .await;
    let stored = eventually(Duration::from_secs(5), || async { count(&master) == 1 }).await;
    assert!(stored, "written to the primary");
    // Past the first WAIT's second, so ingest tries again; back well within the 5 s it holds
    // a batch for.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    replica.restart();
    let landed = eventually(Duration::from_secs(10), || async {
        env.queue_ready(&deps.broker, &queue).await == 0 && count(&replica) >= 1
    })
    .await;
    trigger.trigger();
    let stats = role.await.unwrap().unwrap();
    assert!(landed, "acknowledged once the replica is back");
    assert_eq!(stats.messages, 1, "{stats:?}");
    assert_eq!(count(&master), 1, "the consent counted once");
}

/// A claim the replica did not get is released before anything is called: once the replica is
/// back, the job sends with the same prepayId use (not recorded in doubt, which for a
/// prepayId would mean `sent_unconfirmed` and no message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_no_replica_acknowledged_is_released_and_sent_once_it_is_back() {
    let master = PrivateRedis::start(&[]);
    let mut replica = PrivateRedis::replica_of(&master, &[]);
    let fake_config =
        FakeConfig::with_apps(vec![FakeApp::new(TEST_APP, SECRET).with_templates([TPL])]);
    let fake = FakeWeChat::start(fake_config).await.expect("fake WeChat");
    let env = send_env("durable_wait_claim", &master, &fake);
    let deps = env.deps().await;
    let who = user(8);
    let ids = fake
        .issue_prepay_ids(None, &who, 1, Some(Duration::from_secs(3600)))
        .unwrap();
    let now = now_ms() / 1000;
    let creds: Vec<Credential> = Credential::prepay_uses(&ids[0], now + 3600).collect();
    let open_id = OpenId::new(&who).unwrap();
    deps.bank.store(&env.app, &open_id, &creds).await.unwrap();

    replica.stop();
    let (q, trigger, role) = send_one_job(&env, &deps, "cp", &who, Duration::from_secs(5)).await;
    let marks = deps.bank.keys().marks(&env.app, &open_id);
    let claimed = eventually(Duration::from_secs(10), || async {
        master.cmd_sync(&["HGET", &marks, "cp"]).as_deref() == Some("L")
    })
    .await;
    assert!(claimed, "claimed on the primary");
    let handed_back = eventually(Duration::from_secs(15), || async {
        env.queue_ready(&deps.broker, &q).await == 1
    })
    .await;
    assert!(
        handed_back,
        "not acknowledged while no replica has the claim"
    );
    assert_eq!(
        fake.requests().iter().filter(|r| r.delivered).count(),
        0,
        "no call made"
    );

    replica.restart();
    let counts = || async { wxpush_testkit::campaign_counts(&deps.bank, &env.app, "cp").await };
    let sent = eventually(Duration::from_secs(30), || async {
        counts().await.get("sent") == Some(&1)
    })
    .await;
    trigger.trigger();
    let _ = role.await;
    assert!(sent, "sent once the replica is back: {:?}", counts().await);
    assert_eq!(fake.requests().iter().filter(|r| r.delivered).count(), 1);
}
