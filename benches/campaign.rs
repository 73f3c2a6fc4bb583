//! A campaign with separate processes, against the ceilings measured in the same run.
//!
//! `cargo bench --bench campaign` (`-- --users N --memory-users M --skip-memory
//! --ceiling-jobs J --concurrency C`). The real `wxpush dispatch` and `wxpush send` binaries
//! (release, beside this executable) run as child processes against the local Redis and
//! RabbitMQ; the fake WeChat runs in this process and answers at once; the rate limit is far
//! above what is reachable. Steps:
//! 1. N users (default 100,000), each with two fake-issued formIds in the bank.
//! 2. Broker ceiling: N job-sized bodies published with confirms to a bare durable queue, in
//!    chunks of the dispatcher's page size (what the dispatcher does, minus reading the bank).
//! 3. Sender ceiling (as in `benches/send.rs`): one bare consumer doing consume + one Redis
//!    script + one HTTP POST + ack, C jobs at a time, over J jobs (default 20,000).
//! 4. Campaign "bench-a", sequential: one dispatcher alone fans out to every reachable user
//!    (fan-out rate = targeted / publish → `dispatched`); then two senders drain the full
//!    queue (end-to-end rate from the senders' start, and from the first job published, to
//!    the last outcome recorded).
//! 5. Campaign "bench-b", overlapped: the same dispatcher and two senders all running when the
//!    campaign is published; first job published → last outcome recorded.
//! 6. Dispatcher memory: M users (default 1,000,000) in a fresh namespace, a fresh dispatcher
//!    fans a campaign out to all of them with no sender running; its peak RSS (`VmHWM` of
//!    `/proc/<pid>/status`) must stay under 100 MiB. The jobs are purged afterwards.
//!
//! Times come from the campaign record (`started_at_ms`, `dispatched_at_ms`) and the counters
//! (`last_at_ms`), written by the processes themselves on this machine's clock, so polling
//! (every 10 ms) does not blur them. Targets: fan-out ≥ 70% of the broker ceiling (about
//! 9,000 jobs/s here); dispatcher peak memory < 100 MiB for 1,000,000 users.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use serde_json::json;
use wxpush_bank::StoreRequest;
use wxpush_broker::Publisher;
use wxpush_domain::{Credential, OpenId, SendJob};
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeHandle, FakeWeChat};
use wxpush_redis::Conn;
use wxpush_roles::Deps;
use wxpush_testkit::{bench_arg, form_id, now_ms, peak_rss_kib, TestEnv, TEST_APP};

const SECRET: &str = "bench-secret";
const TPL: &str = "TPL_BENCH";
const KEYWORDS: [&str; 2] = ["benchmark", "2026-11-28"];
/// How long any one phase may take before the benchmark gives up (a guard, not a target).
const GUARD: Duration = Duration::from_secs(600);
const TARGET_FAN_OUT_RATIO: f64 = 0.70;
const TARGET_PEAK_MIB: f64 = 100.0;

#[tokio::main]
async fn main() {
    let n = bench_arg("--users", 100_000);
    let ceiling_jobs = bench_arg("--ceiling-jobs", 20_000).min(n);
    let concurrency = bench_arg("--concurrency", 64);
    let memory_users = bench_arg("--memory-users", 1_000_000);
    let skip_memory = std::env::args().any(|a| a == "--skip-memory");

    let figures = campaign_figures(n, ceiling_jobs, concurrency).await;
    let memory = if skip_memory {
        None
    } else {
        Some(dispatcher_memory(memory_users).await)
    };
    print_report(n, ceiling_jobs, concurrency, &figures, memory.as_ref());
}

// ---------------------------------------------------------------------------------------
// Setup

/// The i-th benchmark user (28 characters, like a real openId).
fn user(i: usize) -> OpenId {
    OpenId::new(&format!("oBenchCamp{i:018}")).expect("valid openId")
}

/// A send job exactly as the dispatcher writes it for the benchmark campaigns.
fn job_body(campaign_id: &str, who: &OpenId) -> Vec<u8> {
    let job: SendJob = serde_json::from_value(json!({
        "campaignId": campaign_id, "openId": who.as_str(), "templateId": TPL,
        "data": {"keyword1": KEYWORDS[0], "keyword2": KEYWORDS[1]}}))
    .expect("valid job");
    job.to_json()
}

fn campaign_body(id: &str) -> Vec<u8> {
    json!({"campaignId": id, "templateId": TPL, "keywords": KEYWORDS, "audience": {"all": true}})
        .to_string()
        .into_bytes()
}

/// Stores `creds(i)` for every user, `batch` users per Redis round trip.
async fn store_users(
    env: &TestEnv,
    deps: &Deps,
    users: &[OpenId],
    batch: usize,
    mut creds: impl FnMut(usize, &OpenId) -> Vec<Credential>,
) {
    for (b, us) in users.chunks(batch).enumerate() {
        let cs: Vec<Vec<Credential>> = us
            .iter()
            .enumerate()
            .map(|(k, u)| creds(b * batch + k, u))
            .collect();
        let reqs: Vec<StoreRequest<'_>> = us
            .iter()
            .zip(&cs)
            .map(|(o, c)| StoreRequest {
                app: &env.app,
                open_id: o,
                credentials: c,
            })
            .collect();
        deps.bank.store_batch(&reqs).await.expect("store batch");
    }
}

/// The fake WeChat and an install pointed at it, with senders far below the rate limit.
async fn fake_install(name: &str, recorded: usize) -> (TestEnv, FakeHandle) {
    let mut env = TestEnv::new(name);
    let mut config =
        FakeConfig::with_apps(vec![FakeApp::new(TEST_APP, SECRET).with_templates([TPL])]);
    config.max_recorded_requests = recorded;
    let fake = FakeWeChat::start(config).await.expect("fake WeChat");
    env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
    env.set("WXPUSH_APP_SECRET", SECRET);
    env.set("WXPUSH_SEND_RATE", "1000000");
    env.set("WXPUSH_LOG", "warn");
    (env, fake)
}

// ---------------------------------------------------------------------------------------
// Child processes

/// The `wxpush` processes this benchmark started; killed if it ends early.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    /// Starts `wxpush <role>`; its (warn-level) log goes to this benchmark's stderr, so no
    /// pipe can fill up and stall it.
    fn start(&mut self, env: &TestEnv, role: &str) -> u32 {
        let child = env
            .command(&[role])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wxpush");
        let pid = child.id();
        self.0.push(child);
        pid
    }

    /// SIGTERM to every child, then waits for them (a graceful stop; killed after 10 s).
    async fn terminate(&mut self) {
        for c in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for mut c in self.0.drain(..) {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Campaign record and counters

async fn publish_campaign(env: &TestEnv, deps: &Deps, id: &str) -> i64 {
    let ch = deps.broker.channel().await.expect("channel");
    env.topology()
        .declare_dispatch(&ch)
        .await
        .expect("declare dispatch");
    let _ = ch.close(200, "ok".into()).await;
    let p = Publisher::open(&deps.broker, env.topology())
        .await
        .expect("publisher");
    let at = now_ms();
    p.publish(
        &env.topology().campaigns_exchange(),
        "campaign",
        &campaign_body(id),
        Default::default(),
    )
    .await
    .expect("publish campaign");
    p.close().await;
    at
}

fn field(h: &BTreeMap<String, String>, name: &str) -> i64 {
    h.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The parts of a campaign record the benchmark times.
struct Record {
    targeted: u64,
    started_at_ms: i64,
    dispatched_at_ms: i64,
}

/// Polls the record every 10 ms (calling `each_poll`) until the campaign is dispatched.
async fn wait_dispatched(
    env: &TestEnv,
    bank: &wxpush_bank::Bank,
    id: &str,
    mut each_poll: impl FnMut(),
) -> Record {
    let record = bank.record(&env.app, id);
    let start = Instant::now();
    loop {
        each_poll();
        let r = record.snapshot().await.expect("record").unwrap_or_default();
        if r.is_dispatched() {
            return Record {
                targeted: r.targeted().unwrap_or(0),
                started_at_ms: r.started_at_ms().unwrap_or(0),
                dispatched_at_ms: r.dispatched_at_ms().unwrap_or(0),
            };
        }
        assert!(
            start.elapsed() < GUARD,
            "campaign {id} not dispatched: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Recipient outcomes so far (`duplicate` and `retried` are not).
fn recipient_outcomes(c: &BTreeMap<String, String>) -> u64 {
    c.iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "sent" | "sent_unconfirmed" | "no_credential" | "dead_lettered"
            ) || k.starts_with("failed:")
        })
        .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
        .sum()
}

/// Polls the counters every 10 ms until every targeted recipient has an outcome; returns the
/// counters.
async fn wait_outcomes(
    env: &TestEnv,
    conn: &mut Conn,
    id: &str,
    targeted: u64,
) -> BTreeMap<String, String> {
    // The counters live in one hash per shard (1024 of them): poll every 100 ms, not 10.
    let _ = conn;
    let bank = wxpush_bank::Bank::connect(
        &wxpush_testkit::redis_url(),
        env.ns.clone(),
        Default::default(),
    )
    .await
    .expect("Redis");
    let start = Instant::now();
    loop {
        let c: BTreeMap<String, String> = wxpush_roles::outcomes::read(&bank, &env.app, id)
            .await
            .expect("counters")
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        if recipient_outcomes(&c) >= targeted {
            return c;
        }
        assert!(start.elapsed() < GUARD, "campaign {id} not finished: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn per_sec(count: u64, ms: i64) -> f64 {
    count as f64 * 1000.0 / ms.max(1) as f64
}

// ---------------------------------------------------------------------------------------
// Ceilings

/// A bare durable queue named `<ns>.<suffix>` (not part of the topology: delete it after),
/// of the install's queue type.
async fn bare_queue(env: &TestEnv, deps: &Deps, suffix: &str) -> (lapin::Channel, String) {
    let ch = deps.broker.channel().await.expect("channel");
    let q = format!("{}.{suffix}", env.ns);
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        env.topology().type_args(),
    )
    .await
    .expect("declare bare queue");
    (ch, q)
}

async fn delete_queue(ch: lapin::Channel, q: &str) {
    let _ = ch
        .queue_delete(q.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.close(200, "ok".into()).await;
}

/// Bare publish with confirms: `bodies` to a bare queue, `chunk` in flight at a time.
/// Returns jobs/s.
async fn broker_ceiling(env: &TestEnv, deps: &Deps, bodies: &[Vec<u8>], chunk: usize) -> f64 {
    let (ch, q) = bare_queue(env, deps, "bench-bare-publish").await;
    let publisher = Publisher::open(&deps.broker, env.topology())
        .await
        .expect("publisher");
    let start = Instant::now();
    for c in bodies.chunks(chunk) {
        publisher
            .publish_all("", c.iter().map(|b| (q.as_str(), b.as_slice())))
            .await
            .expect("publish");
    }
    let rate = bodies.len() as f64 / start.elapsed().as_secs_f64();
    publisher.close().await;
    delete_queue(ch, &q).await;
    rate
}

// ---------------------------------------------------------------------------------------
// The campaigns

struct CampaignFigures {
    /// The dispatcher's page size, the broker ceiling's chunk.
    page: usize,
    broker_ceiling: f64,
    sender_ceiling: f64,
    /// Sequential campaign: dispatcher alone, publish → dispatched, and its own start → end.
    fan_out: f64,
    fan_out_own: f64,
    /// Sequential campaign: senders' start → last outcome, and first job → last outcome.
    drain: f64,
    seq_e2e: f64,
    /// Overlapped campaign: fan-out with senders running, first job → last outcome.
    overlapped_fan_out: f64,
    overlapped_e2e: f64,
    /// The dispatcher's peak RSS after both campaigns (MiB).
    dispatcher_peak_mib: f64,
}

async fn campaign_figures(n: usize, ceiling_jobs: usize, concurrency: usize) -> CampaignFigures {
    let (env, fake) = fake_install("bench_campaign", 4 * n + ceiling_jobs).await;
    let deps = env.deps().await;
    let mut conn = deps.bank.connection();
    let users: Vec<OpenId> = (0..n).map(user).collect();
    let expires = now_ms() / 1000 + 86_400;
    store_users(&env, &deps, &users, 500, |_, u| {
        fake.issue_form_ids(None, u.as_str(), 2, None)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(k, f)| Credential::form_id(f, expires + k as i64))
            .collect()
    })
    .await;

    let page = env.config().dispatch_page_size;
    let bodies: Vec<Vec<u8>> = users.iter().map(|u| job_body("bench-a", u)).collect();
    let broker_ceiling = broker_ceiling(&env, &deps, &bodies, page).await;
    drop(bodies);
    let sender_ceiling = wxpush_testkit::ceiling::bare_sender(
        &env,
        &deps,
        &fake,
        SECRET,
        TPL,
        &users[..ceiling_jobs],
        concurrency,
    )
    .await;

    let mut children = Children::default();
    // Sequential: the dispatcher alone, then the senders on a full queue.
    let dispatcher = children.start(&env, "dispatch");
    let published = publish_campaign(&env, &deps, "bench-a").await;
    let a = wait_dispatched(&env, &deps.bank, "bench-a", || {}).await;
    assert_eq!(a.targeted, n as u64, "bench-a targets every user once");
    let senders_at = now_ms();
    children.start(&env, "send");
    children.start(&env, "send");
    let a_counts = wait_outcomes(&env, &mut conn, "bench-a", a.targeted).await;
    let a_last = field(&a_counts, "last_at_ms");

    // Overlapped: everything already running when the campaign comes.
    let b_published = publish_campaign(&env, &deps, "bench-b").await;
    let b = wait_dispatched(&env, &deps.bank, "bench-b", || {}).await;
    assert_eq!(b.targeted, n as u64, "bench-b targets every user once");
    let b_counts = wait_outcomes(&env, &mut conn, "bench-b", b.targeted).await;
    let b_last = field(&b_counts, "last_at_ms");
    let dispatcher_peak_kib = peak_rss_kib(dispatcher).unwrap_or(0);
    children.terminate().await;

    check_every_user_heard_twice(&fake, n, ceiling_jobs, &[&a_counts, &b_counts]);
    deps.broker.close().await;
    CampaignFigures {
        page,
        broker_ceiling,
        sender_ceiling,
        fan_out: per_sec(a.targeted, a.dispatched_at_ms - published),
        fan_out_own: per_sec(a.targeted, a.dispatched_at_ms - a.started_at_ms),
        drain: per_sec(a.targeted, a_last - senders_at),
        seq_e2e: per_sec(a.targeted, a_last - a.started_at_ms),
        overlapped_fan_out: per_sec(b.targeted, b.dispatched_at_ms - b_published),
        overlapped_e2e: per_sec(b.targeted, b_last - b.started_at_ms),
        dispatcher_peak_mib: dispatcher_peak_kib as f64 / 1024.0,
    }
}

/// Both campaigns sent to every user (they had a formId each time), and the fake accepted
/// exactly one message per user per campaign (plus the sender ceiling's own sends).
fn check_every_user_heard_twice(
    fake: &FakeHandle,
    n: usize,
    ceiling_jobs: usize,
    counts: &[&BTreeMap<String, String>],
) {
    for c in counts {
        assert_eq!(field(c, "sent"), n as i64, "every user sent once: {c:?}");
    }
    let stats = fake.stats();
    assert_eq!(
        stats.sends_accepted,
        (2 * n + ceiling_jobs) as u64,
        "the fake accepted one message per user per campaign"
    );
    assert!(
        stats.sends_by_open_id.values().all(|&k| k <= 3),
        "nobody heard twice from one campaign"
    );
}

// ---------------------------------------------------------------------------------------
// Dispatcher memory

struct MemoryFigures {
    users: usize,
    load_secs: f64,
    fan_out: f64,
    peak_mib: f64,
}

async fn dispatcher_memory(m: usize) -> MemoryFigures {
    let mut env = TestEnv::new("bench_campaign_mem");
    env.set("WXPUSH_LOG", "warn");
    let deps = env.deps().await;
    let users: Vec<OpenId> = (0..m).map(user).collect();
    let expires = now_ms() / 1000 + 86_400;
    let start = Instant::now();
    store_users(&env, &deps, &users, 1000, |i, _| {
        vec![Credential::form_id(form_id(7, i as u64), expires)]
    })
    .await;
    let load_secs = start.elapsed().as_secs_f64();
    drop(users);

    let mut children = Children::default();
    let pid = children.start(&env, "dispatch");
    let published = publish_campaign(&env, &deps, "bench-mem").await;
    let mut peak_kib = 0;
    let r = wait_dispatched(&env, &deps.bank, "bench-mem", || {
        peak_kib = peak_kib.max(peak_rss_kib(pid).unwrap_or(0));
    })
    .await;
    peak_kib = peak_kib.max(peak_rss_kib(pid).unwrap_or(0));
    assert_eq!(r.targeted, m as u64, "bench-mem targets every user once");
    children.terminate().await;

    // Let RabbitMQ drop the jobs now rather than when the namespace is removed.
    let ch = deps.broker.channel().await.expect("channel");
    let _ = ch
        .queue_purge(
            env.topology().send_queue().as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await;
    let _ = ch.close(200, "ok".into()).await;
    deps.broker.close().await;
    MemoryFigures {
        users: m,
        load_secs,
        fan_out: per_sec(r.targeted, r.dispatched_at_ms - published),
        peak_mib: peak_kib as f64 / 1024.0,
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn row(label: &str, value: String, target: &str) {
    println!("{label:<62} {value:>9}   {target}");
}

fn print_report(
    n: usize,
    ceiling_jobs: usize,
    concurrency: usize,
    f: &CampaignFigures,
    m: Option<&MemoryFigures>,
) {
    println!(
        "campaign benchmark: {n} reachable users, one dispatcher and two senders (separate \
         processes), fake WeChat in process answering at once, rate limit far above reach, \
         release build"
    );
    let pct = |a: f64, b: f64| format!("{:.0}%", 100.0 * a / b);
    let ratio = f.fan_out / f.broker_ceiling;
    row(
        "broker ceiling: bare publish with confirms (jobs/s)",
        format!("{:.0}", f.broker_ceiling),
        &format!("(chunks of {} = the dispatcher's page)", f.page),
    );
    row(
        "fan-out, dispatcher alone: publish → dispatched (jobs/s)",
        format!("{:.0}", f.fan_out),
        "",
    );
    row(
        "  vs the broker ceiling",
        pct(f.fan_out, f.broker_ceiling),
        &format!(
            "≥ {:.0}% {}",
            100.0 * TARGET_FAN_OUT_RATIO,
            verdict(ratio >= TARGET_FAN_OUT_RATIO)
        ),
    );
    row(
        "  the dispatcher's own first → last page (jobs/s)",
        format!("{:.0}", f.fan_out_own),
        "",
    );
    row(
        &format!("sender ceiling: 1 bare consumer, {concurrency} at a time (sends/s)"),
        format!("{:.0}", f.sender_ceiling),
        &format!("({ceiling_jobs} jobs; consume + script + POST + ack)"),
    );
    row(
        "sequential: 2 senders on the full queue, start → last outcome",
        format!("{:.0}", f.drain),
        &format!("{} of the sender ceiling", pct(f.drain, f.sender_ceiling)),
    );
    row(
        "sequential: first job published → last outcome (/s)",
        format!("{:.0}", f.seq_e2e),
        "(fan-out, then the senders)",
    );
    row(
        "overlapped: fan-out with both senders running (jobs/s)",
        format!("{:.0}", f.overlapped_fan_out),
        &format!(
            "{} of the broker ceiling",
            pct(f.overlapped_fan_out, f.broker_ceiling)
        ),
    );
    row(
        "overlapped: first job published → last outcome (/s)",
        format!("{:.0}", f.overlapped_e2e),
        &format!(
            "{} of the sender ceiling",
            pct(f.overlapped_e2e, f.sender_ceiling)
        ),
    );
    row(
        &format!("dispatcher peak RSS after both {n}-user campaigns (MiB)"),
        format!("{:.1}", f.dispatcher_peak_mib),
        "",
    );
    match m {
        Some(m) => {
            row(
                &format!("dispatcher peak RSS, {}-user campaign (MiB)", m.users),
                format!("{:.1}", m.peak_mib),
                &format!(
                    "< {TARGET_PEAK_MIB:.0} MiB {}",
                    verdict(m.peak_mib < TARGET_PEAK_MIB)
                ),
            );
            row(
                "  its fan-out, publish → dispatched (jobs/s)",
                format!("{:.0}", m.fan_out),
                &format!("(bank of {} users loaded in {:.0} s)", m.users, m.load_secs),
            );
        }
        None => println!("dispatcher memory: skipped (--skip-memory)"),
    }
    println!(
        "the sender ceiling is one bare consumer in this process; the end-to-end rates are two \
         sender processes sharing this machine's 2 cores with the dispatcher, Redis, RabbitMQ \
         and the fake"
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "(met)"
    } else {
        "(NOT met)"
    }
}
