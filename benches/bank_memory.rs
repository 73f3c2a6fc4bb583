//! Redis memory per stored formId: the bank's layout against the seed's (a Redis list per
//! user of JSON `{"formId","expire"}` objects), both measured in the same run.
//!
//! `cargo bench --bench bank_memory` (`-- --users N --per-user K` to change the load). It
//! starts a private `redis-server` on a free port so no other client disturbs `INFO memory`
//! (falling back to `WXPUSH_REDIS_URL` with a warning when `redis-server` is not installed),
//! loads 100,000 users × 10 formIds of 32 hex digits (like WeChat's) with 28-character
//! openIds, and prints `used_memory` growth per formId. Target: ≤ 64 bytes.

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

async fn used_memory(conn: &mut redis::aio::ConnectionManager) -> i64 {
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
    drop(redis);
}
