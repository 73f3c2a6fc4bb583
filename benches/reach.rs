//! `wxpush reach` on a big bank, beside the ceilings Redis itself sets, measured in the same run.
//!
//! `cargo bench --bench reach` (`-- --users N --runs R`; defaults 1,000,000 users, 3 runs).
//! Steps:
//! 1. A private namespace is filled with N users through the bank's own store
//!    (`Bank::store_batch`, batches of 2,000, 4 in flight): each user gets 1 to 3 formIds
//!    expiring 0 to 6 whole days (and 1 to 23 hours) ahead; every 10th user also gets a
//!    tombstone (a spent formId, written with a plain `ZADD`); every 5th user holds subscribe
//!    consents for one of 3 templates (`SADD {ns}:t:..`, `HINCRBY {ns}:tc:..`). The expected
//!    forecast is computed while generating, and every run is checked against it.
//! 2. The release `wxpush reach --json` runs R times as a child process: wall time (process
//!    start to exit), the time it reports itself (`elapsed_ms`), and its peak RSS (`VmHWM`).
//!    During the first run a probe on its own connection PINGs Redis every millisecond and
//!    keeps the slowest answer: how long other clients wait behind the forecast.
//! 3. Ceilings, in this process on one multiplexed connection with the same 8 requests in
//!    flight: (a) 1,024 trivial scripts (`return 1`, one per shard: the cost of the calls
//!    themselves), (b) the bare walk inside Redis: 1,024 scripts doing `ZRANGE` of the shard
//!    and one `ZCARD` per user (the least per-user work a Lua walk can do), (c) one `ZCARD`
//!    per user key sent from the client in pipelines of 10,000 (what counting from outside
//!    would cost at the least, before any logic).
//! 4. The namespace is deleted.
//!
//! Target: a few seconds for 1,000,000 users; the forecast within 2× of the bare walk (b).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use wxpush_bank::keys::shard_of;
use wxpush_bank::{Bank, BankSettings, Keys, StoreRequest, SHARDS};
use wxpush_domain::{Credential, OpenId};
use wxpush_redis::Conn;
use wxpush_testkit::{bench_arg, form_id, now_ms, peak_rss_kib, redis_url, TestEnv};

const DAY: i64 = 86_400;
const TEMPLATES: [&str; 3] = ["TPL_ORDER", "TPL_SIGNIN", "TPL_PROMO"];
/// Requests in flight for the ceilings: as many as `wxpush reach` keeps (`IN_FLIGHT`).
const IN_FLIGHT: usize = 2;
const STORE_BATCH: usize = 2000;

#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    now: u64,
    days: [u64; 7],
    messages: u64,
    /// Per template: (consents, users).
    consents: [(u64, u64); 3],
}

#[tokio::main]
async fn main() {
    let n = bench_arg("--users", 1_000_000);
    let runs = bench_arg("--runs", 3).max(1);
    let mut env = TestEnv::new("bench_reach");
    env.set("WXPUSH_LOG", "warn");
    let bank = Bank::connect(&redis_url(), env.ns.clone(), BankSettings::default())
        .await
        .expect("Redis is reachable (run scripts/services.sh)");
    let mut conn = bank.connection();
    let mem_before = used_memory(&mut conn).await;

    let t0 = now_ms() / 1000;
    let start = Instant::now();
    let expected = fill(&env, &bank, n, t0).await;
    let fill_secs = start.elapsed().as_secs_f64();
    let mem_after = used_memory(&mut conn).await;

    // The forecast, as operators run it.
    let mut walls = Vec::new();
    let mut selfs = Vec::new();
    let mut peak_kib = 0;
    let (mut median_ping, mut slowest_ping, mut pings) = (Duration::ZERO, Duration::ZERO, 0);
    for r in 0..runs {
        let probe = (r == 0).then(|| PingProbe::start(redis_url()));
        let (wall, json, kib) = run_reach(&env).await;
        if let Some(p) = probe {
            (median_ping, slowest_ping, pings) = p.stop().await;
        }
        check(&json, &expected);
        walls.push(wall);
        selfs.push(json["elapsed_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0);
        peak_kib = peak_kib.max(kib);
    }

    // Redis's own ceilings over the same data.
    let keys = Keys::new(env.ns.clone());
    let trivial = time(per_shard_scripts(&conn, &keys, &env, "return 1")).await;
    let bare_walk = time(per_shard_scripts(
        &conn,
        &keys,
        &env,
        "local n = 0 \
         for _, u in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do \
           n = n + redis.call('ZCARD', ARGV[1] .. u) \
         end return n",
    ))
    .await;
    let zcard_all = time(zcard_every_user(&conn, &keys, &env, n)).await;

    // Delete the namespace now (the test kit's clean-up would find nothing left).
    let start = Instant::now();
    delete_namespace(&mut conn, &keys, &env, n).await;
    let delete_secs = start.elapsed().as_secs_f64();
    drop(env);

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let wall = median(&mut walls);
    let own = median(&mut selfs);
    println!(
        "reach benchmark: {n} users ({} formIds, {} reachable now), 1,024 shards, local Redis, \
         release build, median of {runs} run(s)",
        expected.messages, expected.now
    );
    row(
        "fill through Bank::store_batch (s)",
        format!("{fill_secs:.1}"),
        &format!(
            "Redis memory +{:.0} MiB",
            (mem_after - mem_before) as f64 / 1_048_576.0
        ),
    );
    row(
        "wxpush reach --json, process start to exit (s)",
        format!("{wall:.2}"),
        &format!("all runs: {}", fmt_list(&walls)),
    );
    row(
        "  as it reports itself (elapsed_ms) (s)",
        format!("{own:.2}"),
        &format!("{:.0} users/s", n as f64 / own),
    );
    row(
        "  peak RSS of the wxpush process (MiB)",
        format!("{:.1}", peak_kib as f64 / 1024.0),
        "",
    );
    row(
        "  another client's PING during the first run: slowest (ms)",
        format!("{:.1}", slowest_ping.as_secs_f64() * 1000.0),
        &format!(
            "median {:.2} ms over {pings} PINGs",
            median_ping.as_secs_f64() * 1000.0
        ),
    );
    row(
        "ceiling (a): 1,024 trivial scripts, one per shard (s)",
        format!("{trivial:.3}"),
        "the calls alone",
    );
    row(
        "ceiling (b): bare walk in Lua, ZRANGE + 1 ZCARD per user (s)",
        format!("{bare_walk:.2}"),
        &format!("reach = {:.2}× this", own / bare_walk),
    );
    row(
        "ceiling (c): ZCARD of every user key, pipelined from the client (s)",
        format!("{zcard_all:.2}"),
        &format!("reach = {:.2}× this", own / zcard_all),
    );
    row("delete the namespace (s)", format!("{delete_secs:.1}"), "");
}

fn row(label: &str, value: String, note: &str) {
    println!("{label:<70} {value:>8}   {note}");
}

fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn time<F: std::future::Future<Output = ()>>(f: F) -> f64 {
    let start = Instant::now();
    f.await;
    start.elapsed().as_secs_f64()
}

fn user(i: usize) -> OpenId {
    OpenId::new(&format!("oBenchReach{i:017}")).expect("valid openId")
}

/// A cheap, fixed pseudo-random number for (i, j).
fn mix(i: usize, j: u64) -> u64 {
    let mut x = (i as u64) ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// User i's credentials: 1 to 3, each expiring d whole days (0..=6) and 1 to 23 hours after
/// `t0`, so a forecast run within the hour puts each user in the bucket of its latest d.
fn credentials(i: usize, t0: i64) -> Vec<Credential> {
    let count = 1 + (mix(i, 0) % 3);
    (0..count)
        .map(|j| {
            let d = (mix(i, j + 1) % 7) as i64;
            let s = 3600 + (mix(i, j + 100) % (DAY as u64 - 7200)) as i64;
            Credential::form_id(form_id(i as u64, j), t0 + d * DAY + s)
        })
        .collect()
}

/// Fills the namespace; returns the forecast it should give.
async fn fill(env: &TestEnv, bank: &Bank, n: usize, t0: i64) -> Expected {
    let mut expected = Expected::default();
    let mut buckets = [0u64; 7];
    for i in 0..n {
        let creds = credentials(i, t0);
        let last = creds.iter().map(|c| c.expires_at).max().unwrap_or(t0);
        buckets[((last - t0) / DAY).clamp(0, 6) as usize] += 1;
        expected.messages += creds.len() as u64;
    }
    expected.now = buckets.iter().sum();
    for d in 1..=7 {
        expected.days[d - 1] = buckets.iter().skip(d).sum();
    }

    let batches: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(STORE_BATCH)
        .map(|s| s..(s + STORE_BATCH).min(n))
        .collect();
    futures_util::stream::iter(batches)
        .map(|range| {
            let bank = bank.clone();
            let app = env.app.clone();
            async move {
                let users: Vec<OpenId> = range.clone().map(user).collect();
                let creds: Vec<Vec<Credential>> =
                    range.clone().map(|i| credentials(i, t0)).collect();
                let reqs: Vec<StoreRequest<'_>> = users
                    .iter()
                    .zip(&creds)
                    .map(|(o, c)| StoreRequest {
                        app: &app,
                        open_id: o,
                        credentials: c,
                    })
                    .collect();
                bank.store_batch(&reqs).await.expect("store batch");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;

    // Tombstones and consents, in the bank's layout, with plain commands.
    let keys = Keys::new(env.ns.clone());
    let mut conn = bank.connection();
    for chunk in (0..n).collect::<Vec<usize>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let who = user(i);
            if i % 10 == 0 {
                pipe.cmd("ZADD")
                    .arg(keys.credentials(&env.app, &who))
                    .arg(-(t0 + DAY))
                    .arg(format!("fspent{i}"))
                    .ignore();
            }
            if i % 5 == 0 {
                let t = (i / 5) % TEMPLATES.len();
                let consents = 1 + (i % 2) as i64;
                let tag = format!("{{{}.{}}}", env.app, shard_of(&who));
                pipe.cmd("SADD")
                    .arg(format!("{}:t:{tag}:{}", env.ns, TEMPLATES[t]))
                    .arg(who.as_str())
                    .ignore();
                pipe.cmd("HINCRBY")
                    .arg(format!("{}:tc:{tag}", env.ns))
                    .arg(TEMPLATES[t])
                    .arg(consents)
                    .ignore();
                expected.consents[t].0 += consents as u64;
                expected.consents[t].1 += 1;
            }
        }
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .expect("tombstones and consents");
    }
    expected
}

/// Runs `wxpush reach --json`: (wall seconds, its JSON, its peak RSS in KiB).
async fn run_reach(env: &TestEnv) -> (f64, Value, u64) {
    let start = Instant::now();
    let mut child = env
        .command(&["reach", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wxpush reach");
    let pid = child.id();
    let mut peak = 0;
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut s).map(|_| s)
    });
    loop {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = start.elapsed().as_secs_f64();
    let out = child.wait_with_output().expect("wxpush reach output");
    let text = reader
        .join()
        .expect("stdout reader")
        .expect("stdout is text");
    assert!(
        out.status.success(),
        "wxpush reach failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        wall,
        serde_json::from_str(&text).expect("reach prints JSON"),
        peak,
    )
}

fn check(j: &Value, e: &Expected) {
    assert_eq!(j["reachable_now"], e.now, "{j}");
    assert_eq!(j["messages_now"], e.messages, "{j}");
    for d in 0..7 {
        assert_eq!(
            j["reachable_by_day"][d]["users"],
            e.days[d],
            "day {}: {j}",
            d + 1
        );
    }
    for (t, (consents, users)) in TEMPLATES.iter().zip(e.consents) {
        let found = j["consents"]["templates"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["template_id"] == *t))
            .unwrap_or_else(|| panic!("{t} missing: {j}"));
        assert_eq!(found["consents"], consents, "{j}");
        assert_eq!(found["users"], users, "{j}");
    }
}

async fn used_memory(conn: &mut Conn) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One script per shard (KEYS[1] the index shard, ARGV[1] the shard's credential prefix),
/// `IN_FLIGHT` at a time on one connection, as the forecast runs them.
async fn per_shard_scripts(conn: &Conn, keys: &Keys, env: &TestEnv, body: &str) {
    let script = redis::Script::new(&format!("#!lua flags=no-writes\n{body}"));
    script
        .load_async(&mut conn.clone())
        .await
        .expect("SCRIPT LOAD");
    let script = &script;
    futures_util::stream::iter(0..SHARDS)
        .map(|shard| {
            let mut conn = conn.clone();
            let index = keys.index_shard(&env.app, shard);
            let prefix = format!("{}:c:{{{}.{}}}:", env.ns, env.app, shard);
            async move {
                let _: i64 = script
                    .key(index)
                    .arg(prefix)
                    .invoke_async(&mut conn)
                    .await
                    .expect("ceiling script");
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

/// `ZCARD` of every user key, in pipelines of 10,000, `IN_FLIGHT` pipelines at a time.
async fn zcard_every_user(conn: &Conn, keys: &Keys, env: &TestEnv, n: usize) {
    let total: u64 = futures_util::stream::iter((0..n).step_by(10_000))
        .map(|s| {
            let mut conn = conn.clone();
            let mut pipe = redis::pipe();
            for i in s..(s + 10_000).min(n) {
                pipe.cmd("ZCARD").arg(keys.credentials(&env.app, &user(i)));
            }
            async move {
                let cards: Vec<u64> = pipe.query_async(&mut conn).await.expect("ZCARD");
                cards.iter().sum::<u64>()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .fold(0u64, |a, b| async move { a + b })
        .await;
    assert!(total >= n as u64, "every user key holds a credential");
}

async fn delete_namespace(conn: &mut Conn, keys: &Keys, env: &TestEnv, n: usize) {
    for s in (0..n).step_by(10_000) {
        let mut pipe = redis::pipe();
        for i in s..(s + 10_000).min(n) {
            pipe.cmd("UNLINK")
                .arg(keys.credentials(&env.app, &user(i)))
                .ignore();
        }
        let _: () = pipe.query_async(conn).await.expect("UNLINK users");
    }
    let mut pipe = redis::pipe();
    for shard in 0..SHARDS {
        let tag = format!("{{{}.{}}}", env.app, shard);
        pipe.cmd("UNLINK")
            .arg(keys.index_shard(&env.app, shard))
            .arg(format!("{}:tc:{tag}", env.ns))
            .ignore();
        for t in TEMPLATES {
            pipe.cmd("UNLINK")
                .arg(format!("{}:t:{tag}:{t}", env.ns))
                .ignore();
        }
    }
    let _: () = pipe.query_async(conn).await.expect("UNLINK shards");
}

/// PINGs Redis every millisecond on a connection of its own, keeping the slowest answer.
struct PingProbe {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl PingProbe {
    fn start(url: String) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let client = redis::Client::open(url).expect("redis url");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("probe connection");
            let mut answers = Vec::new();
            while !*stopped.borrow_and_update() {
                let t = Instant::now();
                let _: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("PING");
                answers.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            answers
        });
        Self { stop, task }
    }

    /// Stops the probe: (median, slowest, PINGs answered).
    async fn stop(self) -> (Duration, Duration, usize) {
        let _ = self.stop.send(true);
        let mut answers = self.task.await.expect("probe task");
        answers.sort();
        let median = answers.get(answers.len() / 2).copied().unwrap_or_default();
        let slowest = answers.last().copied().unwrap_or_default();
        (median, slowest, answers.len())
    }
}
