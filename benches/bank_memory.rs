//! Redis memory per stored credential: formIds in the bank's layout against the seed's (a
//! Redis list per user of JSON `{"formId","expire"}` objects), prepayId uses, and subscribe
//! consents, all measured in the same run.
//!
//! `cargo bench --bench bank_memory` (`-- --users N --per-user K --prepay-per-user P
//! --templates T` to change the load). It starts a private `redis-server` on a free port so no
//! other client disturbs `INFO memory` (falling back to `WXPUSH_REDIS_URL` with a warning when
//! `redis-server` is not installed), and prints `used_memory` growth per entry for:
//! - 100,000 users × 10 formIds of 32 hex digits (like WeChat's), 28-character openIds.
//!   Target: ≤ 64 bytes per hex formId;
//! - the same users × 3 prepayIds of 36 characters (like WeChat's), 3 uses each;
//! - the same users × 3 templates (43-character ids, like WeChat's) with one consent each:
//!   the shards' consent buckets, template dictionaries, totals and holders together.
//!   Target: ≤ 80 bytes per consent, printed next to the formId's figure;
//! - campaign marks: the bytes one campaign leaves per user (its final outcome in the user's
//!   marks, and the campaign's counters), and a user's marks after 30 daily campaigns: final
//!   outcomes are kept 8 days, so 30 days of campaigns leave 9, not 30 (the 29 earlier days
//!   are written as the scripts would have written them on those days, since Redis's clock
//!   cannot be moved; the 30th campaign is claimed and settled for real, and prunes them).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wxpush_bank::{Bank, BankSettings, StoreRequest};
use wxpush_domain::{AppId, Credential, Namespace, OpenId};
use wxpush_testkit::bench_arg;

struct PrivateRedis(Option<Child>, String);

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_redis() -> PrivateRedis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            let url = format!("redis://127.0.0.1:{port}/0");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            PrivateRedis(Some(child), url)
        }
        Err(_) => {
            eprintln!("warning: redis-server not found; measuring on the shared Redis (other clients may disturb the figures)");
            PrivateRedis(None, wxpush_testkit::redis_url())
        }
    }
}

async fn used_memory(conn: &mut wxpush_redis::Conn) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

fn open_id(n: usize) -> String {
    format!("oLvT05{n:022}")
}

#[tokio::main]
async fn main() {
    let users = bench_arg("--users", 100_000);
    let per_user = bench_arg("--per-user", 10);
    let prepay_per_user = bench_arg("--prepay-per-user", 3);
    let templates = bench_arg("--templates", 3);
    let redis = start_redis();
    let ns = Namespace::new("wxpush").unwrap();
    let app = AppId::new("wx1234567890abcdef").unwrap();
    let bank = Bank::connect(&redis.1, ns, BankSettings::default())
        .await
        .expect("Redis reachable");
    let mut conn = bank.connection();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let total = (users * per_user) as f64;
    println!("bank memory: {users} users × {per_user} formIds, 32-character formIds, 28-character openIds");

    let mut results = Vec::new();
    for (label, hex) in [
        ("wxpush bank, hex formIds (as WeChat issues)", true),
        ("wxpush bank, non-hex formIds", false),
    ] {
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        let before = used_memory(&mut conn).await;
        let start = Instant::now();
        for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
            let ids: Vec<OpenId> = chunk
                .iter()
                .map(|&u| OpenId::new(&open_id(u)).unwrap())
                .collect();
            let creds: Vec<Vec<Credential>> = chunk
                .iter()
                .map(|&u| {
                    (0..per_user)
                        .map(|i| {
                            let v = if hex {
                                format!("{:016x}{:016x}", u as u64 * 7919 + 1, i)
                            } else {
                                format!("F{:015}-{:015}", u, i)
                            };
                            Credential::form_id(
                                v,
                                now + 86_400 + (i as i64) * 3600 + (u as i64 % 600),
                            )
                        })
                        .collect()
                })
                .collect();
            let reqs: Vec<StoreRequest<'_>> = ids
                .iter()
                .zip(&creds)
                .map(|(o, c)| StoreRequest {
                    app: &app,
                    open_id: o,
                    credentials: c,
                })
                .collect();
            bank.store_batch(&reqs).await.expect("store");
        }
        let secs = start.elapsed().as_secs_f64();
        let after = used_memory(&mut conn).await;
        results.push((label, (after - before) as f64 / total, total / secs));
    }

    // The seed's representation: RPUSH mina:openid:<openId> of JSON objects.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let before = used_memory(&mut conn).await;
    let start = Instant::now();
    for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for &u in chunk {
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(format!("mina:openid:{}", open_id(u)));
            for i in 0..per_user {
                let expire_ms = (now + 86_400 + (i as i64) * 3600) * 1000;
                cmd.arg(format!(
                    r#"{{"formId":"{:016x}{:016x}","expire":{expire_ms}}}"#,
                    u as u64 * 7919 + 1,
                    i
                ));
            }
            pipe.add_command(cmd).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.expect("rpush");
    }
    let secs = start.elapsed().as_secs_f64();
    let after = used_memory(&mut conn).await;
    results.push((
        "seed: list of JSON per user (no index, no TTL)",
        (after - before) as f64 / total,
        total / secs,
    ));
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    println!(
        "{:<50} {:>14} {:>16}",
        "representation", "bytes/formId", "load formIds/s"
    );
    for (label, bytes, rate) in &results {
        println!("{label:<50} {bytes:>14.1} {rate:>16.0}");
    }
    let ours = results[0].1;
    println!(
        "target ≤ 64 bytes per formId: {} ({ours:.1}); the seed's layout takes {:.1}× the bank's",
        if ours <= 64.0 { "met" } else { "NOT met" },
        results[2].1 / ours
    );

    // The other kinds, each on an empty Redis.
    let prepay = load(&bank, &app, users, |u| {
        (0..prepay_per_user)
            .flat_map(|i| {
                let id = format!("wx{:020}{:014}", u, i);
                let expiry = now + 86_400 + (i as i64) * 3600 + (u as i64 % 600);
                Credential::prepay_uses(&id, expiry).collect::<Vec<_>>()
            })
            .collect()
    })
    .await;
    let template_ids: Vec<String> = (0..templates)
        .map(|t| format!("6fX8lGQe1kP9sWm1vW0tq8s2L3m4N5o6P7q8R9s0T{t:02}"))
        .collect();
    let consents = load(&bank, &app, users, |_| {
        template_ids.iter().map(Credential::consent).collect()
    })
    .await;
    let uses = (users * prepay_per_user * 3) as f64;
    let held = (users * templates) as f64;
    println!();
    println!(
        "{:<50} {:>14} {:>16}",
        "other kinds", "bytes/entry", "load entries/s"
    );
    println!(
        "{:<50} {:>14.1} {:>16.0}",
        format!("prepayId uses ({users} users × {prepay_per_user} prepayIds × 3)"),
        prepay.0 as f64 / uses,
        uses / prepay.1
    );
    println!(
        "{:<50} {:>14.1} {:>16.0}",
        format!("consents ({users} users × {templates} templates × 1)"),
        consents.0 as f64 / held,
        held / consents.1
    );
    println!(
        "  of which the consent buckets {:.1}, the template dictionaries {:.1}, the shard totals \
         {:.1}, the shard holders {:.1}",
        consents.2[0] as f64 / held,
        consents.2[1] as f64 / held,
        consents.2[2] as f64 / held,
        consents.2[3] as f64 / held
    );
    let per_consent = consents.0 as f64 / held;
    println!(
        "target ≤ 80 bytes per consent: {} ({per_consent:.1}; a hex formId takes {ours:.1})",
        if per_consent <= 80.0 {
            "met"
        } else {
            "NOT met"
        },
    );
    marks(&bank, &app, users.min(50_000), now).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    drop(redis);
}

/// Campaign marks: the bytes per user one campaign leaves, and a user's marks after 30 daily
/// campaigns (the earlier 29 written as their days' scripts would have, the 30th real).
async fn marks(bank: &Bank, app: &AppId, users: usize, now: i64) {
    use wxpush_bank::{CampaignClaim, ClaimMode, Settle};
    let mut conn = bank.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let ids: Vec<OpenId> = (0..users)
        .map(|u| OpenId::new(&open_id(u)).unwrap())
        .collect();
    // Each user holds enough formIds for every campaign below.
    for chunk in ids.chunks(500) {
        let creds: Vec<Vec<Credential>> = chunk
            .iter()
            .enumerate()
            .map(|(i, _)| {
                (0..4)
                    .map(|k| Credential::form_id(format!("{i:016x}{k:016x}"), now + 86_400 + k))
                    .collect()
            })
            .collect();
        let reqs: Vec<StoreRequest<'_>> = chunk
            .iter()
            .zip(&creds)
            .map(|(o, c)| StoreRequest {
                app,
                open_id: o,
                credentials: c,
            })
            .collect();
        bank.store_batch(&reqs).await.expect("store");
    }
    let send = |campaign: String| {
        let ids = &ids;
        async move {
            for o in ids {
                let owner = format!("bench-{campaign}");
                let claim = bank
                    .campaign_claim(
                        app,
                        o,
                        &campaign,
                        &owner,
                        Duration::from_secs(30),
                        ClaimMode::Take,
                    )
                    .await
                    .expect("claim");
                assert!(matches!(claim, CampaignClaim::Fresh(_)), "{claim:?}");
                let done = Settle::Final {
                    outcome: "sent",
                    give_back: false,
                };
                assert!(bank
                    .campaign_settle(app, o, &campaign, "TPL", &owner, done)
                    .await
                    .expect("settle"));
            }
        }
    };
    let marks_bytes = |conn: &mut wxpush_redis::Conn| {
        let keys: Vec<String> = ids.iter().map(|o| bank.keys().marks(app, o)).collect();
        let mut conn = conn.clone();
        async move {
            let mut total = 0i64;
            for chunk in keys.chunks(1000) {
                let mut pipe = redis::pipe();
                for k in chunk {
                    pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
                }
                let sizes: Vec<Option<i64>> = pipe.query_async(&mut conn).await.expect("MEMORY");
                total += sizes.into_iter().flatten().sum::<i64>();
            }
            total
        }
    };
    let before = used_memory(&mut conn).await;
    send("c-one".into()).await;
    let one = used_memory(&mut conn).await - before;
    let marks_one = marks_bytes(&mut conn).await;

    // 29 earlier days' campaigns, as their settles would have left them (days today-29 to
    // today-1), then today's, for real.
    let today = now / 86_400;
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for o in chunk {
            let key = bank.keys().marks(app, o);
            for d in 1..=29i64 {
                pipe.hset(
                    &key,
                    format!("daily-{d:02}"),
                    format!("=sent@{}", today - d),
                )
                .ignore();
            }
            pipe.hset(&key, "~ p", today - 29).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.expect("hset");
    }
    let unpruned = marks_bytes(&mut conn).await;
    send("c-today".into()).await;
    let pruned = marks_bytes(&mut conn).await;
    let u = users as f64;
    println!();
    println!("campaign marks ({users} users)");
    println!(
        "  one campaign: {:.1} bytes per user in all (marks {:.1}, the rest its counters)",
        one as f64 / u,
        marks_one as f64 / u
    );
    println!(
        "  after 30 daily campaigns: {:.1} bytes of marks per user (8 days kept, and today's); \
         {:.1} if every outcome were kept",
        pruned as f64 / u,
        unpruned as f64 / u
    );
}

/// Loads `users` users with the credentials `make` gives each (500 users a round trip) on an
/// empty Redis. Returns the `used_memory` growth, the seconds it took, and the memory of the
/// four consent key families (buckets, template dictionaries, shard totals, shard holders;
/// `MEMORY USAGE`, summed over every key) for the consent figure's breakdown.
async fn load(
    bank: &Bank,
    app: &AppId,
    users: usize,
    make: impl Fn(usize) -> Vec<Credential>,
) -> (i64, f64, [i64; 4]) {
    let mut conn = bank.connection();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let before = used_memory(&mut conn).await;
    let start = Instant::now();
    for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
        let ids: Vec<OpenId> = chunk
            .iter()
            .map(|&u| OpenId::new(&open_id(u)).unwrap())
            .collect();
        let creds: Vec<Vec<Credential>> = chunk.iter().map(|&u| make(u)).collect();
        let reqs: Vec<StoreRequest<'_>> = ids
            .iter()
            .zip(&creds)
            .map(|(o, c)| StoreRequest {
                app,
                open_id: o,
                credentials: c,
            })
            .collect();
        bank.store_batch(&reqs).await.expect("store");
    }
    let secs = start.elapsed().as_secs_f64();
    let after = used_memory(&mut conn).await;
    // Key families by their prefix: `wxpush:sb:`, `wxpush:tn:`, `wxpush:tc:`, `wxpush:th:`.
    let mut families = [0i64; 4];
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<i64>> = pipe.query_async(&mut conn).await.expect("MEMORY USAGE");
        for (k, size) in keys.iter().zip(sizes) {
            let family = ["wxpush:sb:", "wxpush:tn:", "wxpush:tc:", "wxpush:th:"]
                .iter()
                .position(|p| k.starts_with(p));
            if let Some(f) = family {
                families[f] += size.unwrap_or(0);
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    (after - before, secs, families)
}
