//! One sender process against the bare ceiling of the same work, measured in the same run.
//!
//! `cargo bench --bench send` (`-- --jobs N --concurrency C [--subscribe 1] [--cap N]`). The app
//! has a frequency cap (contract 8.5; `--cap`, 1,000 a day unless given, 0 for none) that no
//! user reaches: every claim checks and counts it, so its cost is in the figures. With
//! `--subscribe 1` every user holds one subscribe consent instead of a formId and the jobs are
//! subscribe jobs (`/cgi-bin/message/subscribe/send`); the ceiling is the same bare sender
//! (one script, one POST of a template send: the fake answers both APIs at the same cost).
//! With `--quiet 1` the app has quiet hours (contract 8.5) that do not cover the run: every
//! job passes the sender's quiet-hours check, which must cost no Redis round trip.
//! The fake WeChat runs in this
//! process and answers at once; the rate limit is set far above what is reachable. Steps:
//! 1. N users each get one formId from the fake, stored in the bank; N send jobs are queued.
//! 2. wxpush: `Sender::consume` drains them (parse, claim, rate permit, shared token, POST,
//!    outcome recorded, ack), C jobs at a time.
//! 3. Ceiling: the same number of jobs on a bare queue, the same concurrency and prefetch,
//!    each doing only consume + one Redis script (ZPOPMIN of a fresh formId) + one HTTP POST
//!    of the send + ack.
//!
//! 4. Single messages (contract 8.2): N more users, one message each published to
//!    `<ns>.messages`, drained by the same sender, timed until every receipt (8.3) is published:
//!    messages/s and their cost against a campaign job's (target ≤ 1.5×).
//!
//! Printed: sends/s of both and the ratio (target ≥ 5,000/s and ≥ 70%), Redis round trips per
//! sent message (target ≤ 3; from Redis's own command counts over the run, less the commands
//! run inside our Lua scripts), token fetches per 10,000 sends, and the cores the benchmark's
//! process (sender and fake WeChat), Redis and the broker used in each run.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;
use wxpush_bank::StoreRequest;
use wxpush_broker::Publisher;
use wxpush_domain::{Credential, OpenId, SendJob};
use wxpush_fake_wechat::{FakeApp, FakeConfig, FakeWeChat};
use wxpush_roles::send::{SendParts, SendSettings, SendStats, Sender};
use wxpush_roles::ShutdownTrigger;
use wxpush_testkit::{bench_arg, cpu, now_ms, TestEnv, TEST_APP};

const SECRET: &str = "bench-secret";

/// Every Lua script the sender path runs, to tell commands run inside scripts from round trips.
const LUA_SOURCES: &[&str] = &[
    include_str!("../crates/bank/src/lua/claim.lua"),
    include_str!("../crates/bank/src/lua/store.lua"),
    include_str!("../crates/bank/src/lua/release.lua"),
    include_str!("../crates/bank/src/lua/campaign_marks.lua"),
    include_str!("../crates/bank/src/lua/campaign_claim.lua"),
    include_str!("../crates/bank/src/lua/campaign_settle.lua"),
    include_str!("../crates/bank/src/lua/campaign_claim_consent.lua"),
    include_str!("../crates/bank/src/lua/store_consents.lua"),
    include_str!("../crates/bank/src/lua/clear_consents.lua"),
    include_str!("../crates/bank/src/lua/campaign_outcome.lua"),
    include_str!("../crates/bank/src/lua/consent_lib.lua"),
    include_str!("../crates/bank/src/lua/receipt_delivery.lua"),
    include_str!("../crates/fleet/src/lua/pause.lua"),
    include_str!("../crates/fleet/src/lua/rate.lua"),
    include_str!("../crates/fleet/src/lua/token_acquire.lua"),
    include_str!("../crates/fleet/src/lua/token_force.lua"),
    include_str!("../crates/fleet/src/lua/token_invalidate.lua"),
    include_str!("../crates/fleet/src/lua/token_publish.lua"),
    include_str!("../crates/fleet/src/lua/token_release.lua"),
];
const TPL: &str = "TPL_BENCH";

/// Calls per command, summed over every primary.
async fn commandstats(conn: &mut wxpush_redis::Conn) -> BTreeMap<String, u64> {
    let nodes = wxpush_testkit::redis_nodes::info_per_node(conn, "commandstats").await;
    assert!(!nodes.is_empty(), "INFO commandstats answered");
    let mut total = BTreeMap::new();
    for (name, calls) in nodes.iter().flat_map(|info| parse_commandstats(info)) {
        *total.entry(name).or_insert(0) += calls;
    }
    total
}

fn parse_commandstats(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    // 60,000 by default: at 20,000 the bare ceiling (a second or so) moved by 1.5× between
    // runs on this machine, and the ratio with it.
    let n = bench_arg("--jobs", 60_000);
    let concurrency = bench_arg("--concurrency", 64);
    let subscribe = bench_arg("--subscribe", 0) == 1;
    let cap = bench_arg("--cap", 1000);
    let mut env = TestEnv::new("bench_send");
    if cap > 0 {
        env.set(
            "WXPUSH_MAX_CAMPAIGN_MESSAGES_PER_USER_PER_DAY",
            &cap.to_string(),
        );
        env.set("WXPUSH_CAP_SINGLE_MESSAGES", "1");
    }
    let mut fake_config =
        FakeConfig::with_apps(vec![FakeApp::new(TEST_APP, SECRET).with_templates([TPL])]);
    fake_config.max_recorded_requests = 4 * n;
    let fake = FakeWeChat::start(fake_config).await.expect("fake");
    env.set("WXPUSH_WECHAT_API_BASE", &fake.base_url());
    env.set("WXPUSH_APP_SECRET", SECRET);
    env.set("WXPUSH_SEND_RATE", "1000000");
    // `--quiet 1`: the app has quiet hours (contract 8.5) that do not cover the run, so every
    // job is checked against them on the way (in memory: the round trips must not move).
    let quiet = (bench_arg("--quiet", 0) == 1).then(quiet_hours_elsewhere);
    if let Some(window) = &quiet {
        env.set("WXPUSH_QUIET_HOURS", window);
    }
    let config = env.config();
    let deps = env.deps().await;
    let users: Vec<OpenId> = (0..n)
        .map(|u| OpenId::new(&format!("oBenchSend{u:018}")).unwrap())
        .collect();

    // The bank: one fake-issued formId per user, or one consent the fake also granted.
    let expires = now_ms() / 1000 + 86_400;
    let creds: Vec<Vec<Credential>> = users
        .iter()
        .map(|u| {
            if subscribe {
                fake.register_user(None, u.as_str()).unwrap();
                fake.grant_consents(None, u.as_str(), TPL, 1).unwrap();
                return vec![Credential::consent(TPL)];
            }
            let f = fake.issue_form_ids(None, u.as_str(), 1, None).unwrap();
            vec![Credential::form_id(f[0].clone(), expires)]
        })
        .collect();
    for (us, cs) in users.chunks(500).zip(creds.chunks(500)) {
        let reqs: Vec<StoreRequest<'_>> = us
            .iter()
            .zip(cs)
            .map(|(o, c)| StoreRequest {
                app: &env.app,
                open_id: o,
                credentials: c,
            })
            .collect();
        deps.bank.store_batch(&reqs).await.unwrap();
    }
    let topology = env.topology();
    let ch = deps.broker.channel().await.unwrap();
    topology.declare_send(&ch).await.unwrap();
    let publisher = Publisher::open(&deps.broker, topology.clone())
        .await
        .unwrap();
    let jobs: Vec<Vec<u8>> = users
        .iter()
        .map(|u| {
            let body = if subscribe {
                json!({"campaignId": "bench", "openId": u.as_str(), "templateId": TPL,
                       "kind": "subscribe",
                       "data": {"thing1": "benchmark", "character_string2": "SF1234567"}})
            } else {
                json!({"campaignId": "bench", "openId": u.as_str(), "templateId": TPL,
                       "data": {"keyword1": "benchmark", "keyword2": "2026-11-28"}})
            };
            let j: SendJob = serde_json::from_value(body).unwrap();
            j.to_json()
        })
        .collect();
    let send_q = topology.send_queue();
    for chunk in jobs.chunks(2000) {
        publisher
            .publish_all("", chunk.iter().map(|b| (send_q.as_str(), b.as_slice())))
            .await
            .unwrap();
    }

    // wxpush's sender.
    let parts = SendParts::connect(&config, &deps, wxpush_wechat::DEFAULT_REQUEST_TIMEOUT)
        .await
        .unwrap();
    let mut settings = SendSettings::from_config(&config);
    settings.concurrency = concurrency;
    let sender = Sender::start(&deps, parts, &topology, &settings)
        .await
        .unwrap();
    let mut conn = deps.bank.connection();
    let before = commandstats(&mut conn).await;
    let (_trigger, shutdown) = ShutdownTrigger::new();
    let cpu0 = cpu::sample(&mut conn).await;
    let start = Instant::now();
    let stats = sender.consume(shutdown, Some(n as u64)).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let wxpush_cpu = cpu0.until(&cpu::sample(&mut conn).await);
    let after = commandstats(&mut conn).await;
    let sent = SendStats::get(&stats.sent);
    assert_eq!(sent, n as u64, "every job sent");
    let delta = |c: &str| after.get(c).copied().unwrap_or(0) - before.get(c).copied().unwrap_or(0);
    let commands: u64 = after.keys().map(|c| delta(c)).sum();
    // Redis counts the commands a script runs as well as the EVALSHA that ran it; those are
    // not round trips. Their names come from the scripts' own sources. PTTL is also sent
    // directly (the pause check); its script use runs only after a 45009, not seen here.
    let inner: std::collections::BTreeSet<String> = LUA_SOURCES
        .iter()
        .flat_map(|src| src.split("redis.call('").skip(1))
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_lowercase)
        .filter(|c| c != "pttl")
        .collect();
    let inside_scripts: u64 = inner.iter().map(|c| delta(c)).sum();
    // INFO is the benchmark's own.
    let round_trips = commands - inside_scripts - delta("info");
    let wxpush_rate = n as f64 / secs;
    let token_fetches = fake.all_token_fetches(TEST_APP);

    // Single messages (contract 8.2) through the same sender: N more users, one message each
    // published to `<ns>.messages`, each with its receipt (8.3) written and published.
    let single_users: Vec<OpenId> = (0..n)
        .map(|u| OpenId::new(&format!("oBenchOne{u:019}")).unwrap())
        .collect();
    for us in single_users.chunks(500) {
        let cs: Vec<Vec<Credential>> = us
            .iter()
            .map(|u| {
                if subscribe {
                    fake.register_user(None, u.as_str()).unwrap();
                    fake.grant_consents(None, u.as_str(), TPL, 1).unwrap();
                    return vec![Credential::consent(TPL)];
                }
                let f = fake.issue_form_ids(None, u.as_str(), 1, None).unwrap();
                vec![Credential::form_id(f[0].clone(), expires)]
            })
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
        deps.bank.store_batch(&reqs).await.unwrap();
    }
    let messages: Vec<Vec<u8>> = single_users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let body = if subscribe {
                json!({"messageId": format!("bench-{i}"), "openId": u.as_str(), "templateId": TPL,
                       "kind": "subscribe",
                       "data": {"thing1": "benchmark", "character_string2": "SF1234567"}})
            } else {
                json!({"messageId": format!("bench-{i}"), "openId": u.as_str(), "templateId": TPL,
                       "kind": "template",
                       "data": {"keyword1": "benchmark", "keyword2": "2026-11-28"}})
            };
            body.to_string().into_bytes()
        })
        .collect();
    let messages_x = topology.messages_exchange();
    for chunk in messages.chunks(2000) {
        publisher
            .publish_all(&messages_x, chunk.iter().map(|b| ("m", b.as_slice())))
            .await
            .unwrap();
    }
    let before_single = commandstats(&mut conn).await;
    let (_trigger2, shutdown2) = ShutdownTrigger::new();
    let cpu0 = cpu::sample(&mut conn).await;
    let start = Instant::now();
    let stats2 = sender.consume(shutdown2, Some(n as u64)).await.unwrap();
    // Timed until every receipt is published too: what the sender's drainer had not published
    // when the last message settled is drained now, by the same code.
    let apps = vec![env.app.clone()];
    let (_outbox, drainer) = wxpush_roles::receipts::outbox(&deps.bank, &topology, apps);
    let left = deps
        .bank
        .receipt_outboxes_stale(&env.app, std::time::Duration::ZERO)
        .await
        .unwrap();
    let receipts_left = left.len();
    let late = drainer
        .drain_all(&publisher, left.into_iter().map(|s| (env.app.clone(), s)))
        .await
        .unwrap();
    let single_secs = start.elapsed().as_secs_f64();
    let single_cpu = cpu0.until(&cpu::sample(&mut conn).await);
    let after_single = commandstats(&mut conn).await;
    assert_eq!(
        SendStats::get(&stats2.sent),
        2 * n as u64,
        "every message sent"
    );
    let single_rate = n as f64 / single_secs;
    let delta2 = |c: &str| {
        after_single.get(c).copied().unwrap_or(0) - before_single.get(c).copied().unwrap_or(0)
    };
    let single_commands: u64 = after_single.keys().map(|c| delta2(c)).sum();
    let single_inside: u64 = inner.iter().map(|c| delta2(c)).sum();
    let single_round_trips = single_commands - single_inside - delta2("info");

    // The bare ceiling: consume + one script + one POST + ack, same concurrency.
    let bare_users: Vec<OpenId> = (0..n)
        .map(|u| OpenId::new(&format!("oBenchBare{u:018}")).unwrap())
        .collect();
    let cpu0 = cpu::sample(&mut conn).await;
    let bare_rate = wxpush_testkit::ceiling::bare_sender(
        &env,
        &deps,
        &fake,
        SECRET,
        TPL,
        &bare_users,
        concurrency,
    )
    .await;
    let bare_cpu = cpu0.until(&cpu::sample(&mut conn).await);

    let kind = if subscribe {
        "subscribe (one consent each)"
    } else {
        "template (one formId each)"
    };
    println!(
        "send benchmark: {n} {kind} jobs, concurrency {concurrency}, {} queues, fake WeChat in process answering at once, release build",
        env.topology().queue_type().as_str()
    );
    if let Some(window) = &quiet {
        println!("quiet hours configured, not covering the run: {window} (Asia/Shanghai)");
    }
    if cap > 0 {
        println!("frequency cap {cap} a day (checked and counted at every claim, singles too; reached by no user)");
    }
    println!(
        "{:<44} {:>10}",
        "wxpush sender (sends/s)",
        format!("{wxpush_rate:.0}")
    );
    println!(
        "{:<44} {:>10}",
        "bare ceiling: consume+script+POST+ack (/s)",
        format!("{bare_rate:.0}")
    );
    println!("{:<44} {:>9.0}%", "ratio", 100.0 * wxpush_rate / bare_rate);
    println!(
        "{:<44} {:>10}",
        "single messages, same sender (messages/s)",
        format!("{single_rate:.0}")
    );
    println!(
        "{:<44} {:>10.2}",
        "a single message's cost / a campaign job's",
        wxpush_rate / single_rate
    );
    println!(
        "{:<44} {:>10.2}",
        "Redis commands per single message (the bind rides in the claim's pipeline)",
        single_round_trips as f64 / n as f64
    );
    println!("receipts published after the last message settled: {late} (from {receipts_left} outboxes, timed)");
    println!("cores used, single messages: {single_cpu}");
    println!(
        "{:<44} {:>10.2}",
        "Redis round trips per sent message",
        round_trips as f64 / n as f64
    );
    println!(
        "{:<44} {:>10.1}",
        "token fetches per 10,000 sends",
        token_fetches as f64 * 10_000.0 / n as f64
    );
    println!("cores used, wxpush sender: {wxpush_cpu}");
    println!("cores used, bare ceiling:  {bare_cpu}");
    println!("targets: ≥ 5,000 sends/s, ≥ 70% of the ceiling, ≤ 3 round trips per message, a single message ≤ 1.5× a campaign job");
    let mut per_command: Vec<(String, u64)> = after
        .keys()
        .map(|c| (c.clone(), delta(c)))
        .filter(|(_, v)| *v > 0)
        .collect();
    per_command.sort();
    println!("Redis commands during the wxpush run: {per_command:?}");
    publisher.close().await;
    deps.broker.close().await;
}

/// An hour of quiet hours starting six hours from now in Asia/Shanghai (UTC+8 all year).
fn quiet_hours_elsewhere() -> String {
    let hm = |unix_secs: i64| {
        let s = (unix_secs + 8 * 3600).rem_euclid(86_400);
        format!("{:02}:{:02}", s / 3600, s / 60 % 60)
    };
    let now = now_ms() / 1000;
    format!("{}-{}", hm(now + 6 * 3600), hm(now + 7 * 3600))
}
