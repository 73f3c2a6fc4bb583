//! Ingest throughput against the broker's own ceiling, measured in the same run.
//!
//! `cargo bench --bench ingest` (`-- --messages N`, `--batch B`, `--prefetch P` to change the
//! load and the role's tuning; defaults are the role's defaults; `--shape 1` or `--shape 10`
//! runs one scenario only). For each scenario
//! (1 formId per upload, 10 formIds per upload) it fills the ingest queue with N persistent
//! uploads, then times the ingest role's own consume loop (`Ingest::consume`: parse, dead-letter, one
//! pipelined Redis round trip per batch overlapping the next batch's reading, one multiple
//! ack per batch) draining it. The ceiling is a bare consumer with
//! the same prefetch and batching that only acks, draining a queue filled with the same
//! messages. Targets: ≥ 20,000 uploads/s with 1 formId, ≥ 100,000 formIds/s with 10, and
//! ≥ 70% of the ceiling. Also printed: the bank alone (the same stores without the broker).

use std::time::{Duration, Instant};

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use serde_json::json;
use wxpush_bank::StoreRequest;
use wxpush_broker::{BatchConsumer, Publisher};
use wxpush_domain::{Credential, OpenId};
use wxpush_roles::ingest::{Ingest, IngestSettings, IngestStats};
use wxpush_roles::ShutdownTrigger;
use wxpush_testkit::{bench_arg, cpu, form_id, now_ms, TestEnv};

fn bodies(n: usize, per: u64, seed: u64) -> Vec<Vec<u8>> {
    let expire = now_ms() + 86_400_000;
    (0..n)
        .map(|u| {
            let ids: Vec<_> = (0..per)
                .map(|i| json!({"formId": form_id(seed + u as u64, i), "expire": expire}))
                .collect();
            json!({"openId": format!("oBench{u:022}"), "formIds": ids})
                .to_string()
                .into_bytes()
        })
        .collect()
}

async fn fill(publisher: &Publisher, exchange: &str, routing_key: &str, bodies: &[Vec<u8>]) {
    for chunk in bodies.chunks(2000) {
        publisher
            .publish_all(exchange, chunk.iter().map(|b| (routing_key, b.as_slice())))
            .await
            .expect("publish");
    }
}

struct Scenario {
    name: &'static str,
    per: u64,
    messages: usize,
}

#[tokio::main]
async fn main() {
    let n = bench_arg("--messages", 100_000);
    let scenarios = [
        Scenario {
            name: "1 formId per upload",
            per: 1,
            messages: n,
        },
        Scenario {
            name: "10 formIds per upload",
            per: 10,
            messages: n / 2,
        },
    ];
    let env = TestEnv::new("bench_ingest");
    let deps = env.deps().await;
    env.declare_ingest(&deps.broker).await;
    let mut settings = IngestSettings::from_config(&env.config());
    settings.batch_max = bench_arg("--batch", settings.batch_max);
    settings.prefetch = bench_arg("--prefetch", usize::from(settings.prefetch)).min(65_535) as u16;
    let topology = env.topology();
    let publisher = Publisher::open(&deps.broker, topology.clone())
        .await
        .unwrap();
    let bare_queue = format!("{}.bench-bare", env.ns);
    let ch = deps.broker.channel().await.unwrap();
    // Of the install's queue type, as the ingest queue is.
    ch.queue_declare(
        bare_queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        topology.type_args(),
    )
    .await
    .unwrap();
    println!(
        "ingest benchmark: prefetch {}, batches of up to {}, persistent messages, {} queues, release build",
        settings.prefetch,
        settings.batch_max,
        topology.queue_type().as_str()
    );
    println!(
        "{:<24} {:>9} {:>14} {:>14} {:>16} {:>7} {:>16}",
        "scenario",
        "uploads",
        "ingest msg/s",
        "formIds/s",
        "bare ceiling/s",
        "ratio",
        "bank alone fid/s"
    );
    let mut conn = deps.bank.connection();
    let mut cpu_lines = Vec::new();
    // `--shape 1` or `--shape 10`: only that scenario (for a profiler); 0, the default: both.
    let shape = bench_arg("--shape", 0) as u64;
    for (k, s) in scenarios.iter().enumerate() {
        if shape != 0 && s.per != shape {
            continue;
        }
        let data = bodies(s.messages, s.per, (k as u64 + 1) << 40);

        // Ceiling: the same messages, a consumer that only acks, same prefetch and batching.
        fill(&publisher, "", &bare_queue, &data).await;
        let mut bare = BatchConsumer::start(&deps.broker, &bare_queue, settings.prefetch, "bare")
            .await
            .unwrap();
        let cpu0 = cpu::sample(&mut conn).await;
        let start = Instant::now();
        let mut got = 0;
        while got < s.messages {
            let b = bare
                .next_batch(settings.batch_max, settings.batch_bytes)
                .await
                .unwrap()
                .unwrap();
            got += b.len();
            b.ack().await.unwrap();
        }
        let bare_rate = s.messages as f64 / start.elapsed().as_secs_f64();
        let bare_cpu = cpu0.until(&cpu::sample(&mut conn).await);
        let _ = bare.cancel().await;
        bare.close().await;

        // Ingest: the role's own batch step on the real queue.
        fill(&publisher, &topology.uploads_exchange(), "upload", &data).await;
        let ingest = Ingest::start(&deps, &topology, &settings).await.unwrap();
        let (_trigger, shutdown) = ShutdownTrigger::new();
        let cpu0 = cpu::sample(&mut conn).await;
        let start = Instant::now();
        let stats: IngestStats = ingest
            .consume(shutdown, Some(s.messages as u64))
            .await
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let ingest_cpu = cpu0.until(&cpu::sample(&mut conn).await);
        assert_eq!(
            stats.store.added,
            s.messages as u64 * s.per,
            "every formId stored"
        );
        assert_eq!(stats.dead_lettered_total(), 0);

        // The bank alone: the same users and credentials stored again under another app key
        // space (a fresh namespace prefix would do as well), batches of the same size.
        let app = wxpush_domain::AppId::new("wxbenchbankalone").unwrap();
        let users: Vec<OpenId> = (0..s.messages.min(50_000))
            .map(|u| OpenId::new(&format!("oBench{u:022}")).unwrap())
            .collect();
        let creds: Vec<Vec<Credential>> = (0..users.len())
            .map(|u| {
                (0..s.per)
                    .map(|i| {
                        Credential::form_id(form_id(u as u64 + 99, i), now_ms() / 1000 + 86_400)
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        for (us, cs) in users
            .chunks(settings.batch_max)
            .zip(creds.chunks(settings.batch_max))
        {
            let reqs: Vec<StoreRequest<'_>> = us
                .iter()
                .zip(cs)
                .map(|(o, c)| StoreRequest {
                    app: &app,
                    open_id: o,
                    credentials: c,
                })
                .collect();
            deps.bank.store_batch(&reqs).await.unwrap();
        }
        let bank_rate = (users.len() as f64 * s.per as f64) / start.elapsed().as_secs_f64();

        let rate = s.messages as f64 / secs;
        println!(
            "{:<24} {:>9} {:>14.0} {:>14.0} {:>16.0} {:>6.0}% {:>16.0}",
            s.name,
            s.messages,
            rate,
            rate * s.per as f64,
            bare_rate,
            100.0 * rate / bare_rate,
            bank_rate
        );
        cpu_lines.push(format!(
            "{:<24} cores used: bare {bare_cpu}; ingest {ingest_cpu}",
            s.name
        ));
        // Start the next scenario from an empty bank.
        env.cleanup();
        env.declare_ingest(&deps.broker).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for l in &cpu_lines {
        println!("{l}");
    }
    println!("targets: ≥ 20,000 uploads/s (1 formId), ≥ 100,000 formIds/s (10 formIds), ≥ 70% of the bare ceiling");
    let _ = ch
        .queue_delete(bare_queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    publisher.close().await;
    deps.broker.close().await;
}
