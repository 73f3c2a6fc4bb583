//! Events/s through `wxpush events` (secure mode) against a bare HTTP handler's ceiling,
//! measured in the same run with the same client.
//!
//! `cargo bench --bench events` (`-- --events N --concurrency C`). The events role runs in this
//! process as `wxpush events` runs it (`wxpush_roles::events::run`: its axum router served on a
//! local port, the Prometheus recorder installed as the CLI installs it) for one app with a
//! push token, an EncodingAESKey (secure mode: every push sealed) and `consent_source = events`,
//! so each `subscribe_msg_popup_event` does the real work: both signatures checked, the
//! envelope opened (AES-256-CBC), the JSON event parsed, the nonce remembered in Redis
//! (`SET NX EX`) and the consent stored by the once-per-event script (consent and event mark
//! together), then `success` answered. Sent events never reach the delivery sink here (the
//! bench pushes popups only), so the sink is `CountSentEvents`.
//!
//! N requests are built before the clock starts (N distinct users, one accepted template
//! each, distinct nonces, sealed and signed as WeChat does, `wxpush_fake_wechat::event_body`
//! and `push_crypto`), then sent by C HTTP/1.1 keep-alive connections, one request in flight
//! on each (a small client of this file: the bytes written as built, the answer read by its
//! `Content-Length`), until every one is answered 200 `success`. The same client, the same N
//! requests and the same C connections then measure:
//! - the bare ceiling: an axum handler on another port that reads the body and answers
//!   `success`;
//! - the ceiling with one Redis round trip: the same, plus the query parsed and the nonce
//!   `SET NX EX` in Redis (under another app, so that wxpush's nonces stay fresh);
//! - the crypto and parsing alone, one thread, no HTTP and no Redis: both signatures computed
//!   and compared, the envelope read, opened and the event parsed, per second.
//!
//! After the run the consents stored are read back through the bank (`consent_total`): they
//! must equal N, one per event, or the figure is not of real work. Printed: the rates, the
//! ratios, the cores the benchmark's process (client and server: they share the machine),
//! Redis and the broker used in each run, and from them the CPU time per event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wxpush_bank::Bank;
use wxpush_domain::AppId;
use wxpush_fake_wechat::push::event_body;
use wxpush_fake_wechat::{PushFormat, PushItem, PushKind, PushSpec};
use wxpush_roles::events::{self, CountSentEvents, EventsSettings};
use wxpush_roles::{Health, ShutdownTrigger};
use wxpush_testkit::{bench_arg, cpu, TestEnv, TEST_APP};
use wxpush_wechat::push_crypto::{signature, signatures_match, PushCipher};
use wxpush_wechat::push_event;

const TOKEN: &str = "benchPushTok3n";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const TPL: &str = "TPL_BENCH_EVENTS";

/// One prebuilt push: the bytes written to the socket, and its parts for the crypto loop.
struct Push {
    wire: Vec<u8>,
    timestamp: String,
    nonce: String,
    signature: String,
    msg_signature: String,
    body: String,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// N popup events of N users, each sealed and signed as WeChat does (secure mode, JSON).
fn build(n: usize, cipher: &PushCipher) -> Vec<Push> {
    let now = now_secs();
    let timestamp = now.to_string();
    (0..n)
        .map(|i| {
            let open_id = format!("oBenchEvt{i:019}");
            let spec = PushSpec {
                url: String::new(),
                app_id: TEST_APP.into(),
                token: TOKEN.into(),
                encoding_aes_key: None,
                format: PushFormat::Json,
                kind: PushKind::Popup,
                open_id: open_id.clone(),
                items: vec![PushItem {
                    template_id: TPL.into(),
                    status: Some("accept".into()),
                    ..PushItem::default()
                }],
                create_time: Some(now),
                list_as_array: false,
                times: 1,
                same_nonce: false,
                timestamp_offset_secs: 0,
                sign_with: None,
            };
            let plain = event_body(&spec, now);
            let mut random = [0u8; 16];
            random.iter_mut().for_each(|b| *b = fastrand::u8(..));
            let encrypt = cipher.seal(plain.as_bytes(), TEST_APP, random);
            let nonce = format!("{}{i}", fastrand::u32(..));
            let sig = signature(&[TOKEN, &timestamp, &nonce]);
            let msg_sig = signature(&[TOKEN, &timestamp, &nonce, &encrypt]);
            let body = json!({"ToUserName": "gh_fake0000000", "Encrypt": encrypt}).to_string();
            let head = format!(
                "POST /wechat/{TEST_APP}?signature={sig}&timestamp={timestamp}&nonce={nonce}\
                 &openid={open_id}&encrypt_type=aes&msg_signature={msg_sig} HTTP/1.1\r\n\
                 Host: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            let mut wire = head.into_bytes();
            wire.extend_from_slice(body.as_bytes());
            Push {
                wire,
                timestamp: timestamp.clone(),
                nonce,
                signature: sig,
                msg_signature: msg_sig,
                body,
            }
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection, one request in flight.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::with_capacity(1024),
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 2048];
        let got = self.stream.read(&mut chunk).await.expect("read");
        assert!(got > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..got]);
    }

    /// Writes `wire`, reads the answer: its status and body.
    async fn call(&mut self, wire: &[u8]) -> (u16, Vec<u8>) {
        self.stream.write_all(wire).await.expect("write");
        self.buf.clear();
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.read_more().await;
        };
        let head = std::str::from_utf8(&self.buf[..end]).expect("an ASCII head");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .expect("a Content-Length");
        while self.buf.len() < end + 4 + length {
            self.read_more().await;
        }
        (status, self.buf[end + 4..end + 4 + length].to_vec())
    }
}

/// Sends every push over `concurrency` connections to `addr`; pushes answered per second.
/// Panics unless each is answered 200 `success`.
async fn drive(addr: SocketAddr, pushes: &Arc<Vec<Push>>, concurrency: usize) -> f64 {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(Client::connect(addr).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (pushes, next) = (pushes.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(push) = pushes.get(i) else { break };
                    let (status, body) = client.call(&push.wire).await;
                    assert!(
                        status == 200 && body == b"success",
                        "push {i} answered {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a client task");
    }
    pushes.len() as f64 / start.elapsed().as_secs_f64()
}

/// Serves `router` on a free loopback port.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The bare ceiling: reads the body, answers `success`.
fn bare_router() -> Router {
    Router::new().route(
        "/wechat/{appid}",
        post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            "success"
        }),
    )
}

/// The ceiling with one Redis round trip: the query parsed, the nonce `SET NX EX` (the bank's
/// own call, under another app), then `success`.
fn redis_router(bank: Bank, app: AppId) -> Router {
    Router::new()
        .route(
            "/wechat/{appid}",
            post(
                |State((bank, app)): State<(Bank, AppId)>,
                 Query(q): Query<HashMap<String, String>>,
                 body: axum::body::Bytes| async move {
                    std::hint::black_box(body.len());
                    let nonce = q.get("nonce").map_or("", String::as_str);
                    match bank.remember_push_nonce(&app, nonce).await {
                        Ok(true) => "success",
                        _ => "refused",
                    }
                },
            ),
        )
        .with_state((bank, app))
}

/// What the role does to a push without HTTP or Redis, on one thread: pushes per second.
fn crypto_alone(pushes: &[Push], cipher: &PushCipher) -> f64 {
    let start = Instant::now();
    for p in pushes {
        let sig = signature(&[TOKEN, &p.timestamp, &p.nonce]);
        assert!(signatures_match(&p.signature, &sig));
        let envelope = push_event::envelope(p.body.as_bytes(), false).unwrap();
        let msg_sig = signature(&[TOKEN, &p.timestamp, &p.nonce, &envelope.encrypt]);
        assert!(signatures_match(&p.msg_signature, &msg_sig));
        let plain = cipher.open(&envelope.encrypt, TEST_APP).unwrap();
        std::hint::black_box(push_event::parse_json(&plain).unwrap());
    }
    pushes.len() as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n = bench_arg("--events", 30_000);
    let concurrency = bench_arg("--concurrency", 32);
    let mut env = TestEnv::new("bench_events");
    env.set("WXPUSH_PUSH_TOKEN", TOKEN);
    env.set("WXPUSH_ENCODING_AES_KEY", AES_KEY);
    env.set("WXPUSH_CONSENT_SOURCE", "events");
    env.set("WXPUSH_EVENTS_ADDR", "127.0.0.1:0");
    let config = env.config();
    let deps = env.deps().await;
    let mut conn = deps.bank.connection();

    // As `wxpush events` runs it: the Prometheus recorder (the role counts every request).
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::set_global_recorder(recorder).unwrap();
    let health = Health::new();
    let (_trigger, shutdown) = ShutdownTrigger::new();
    let settings = EventsSettings::from_config(&config).unwrap();
    let (events_addr, _task) = events::run(
        deps.bank.clone(),
        settings,
        Arc::new(CountSentEvents),
        &health,
        shutdown,
    )
    .await
    .unwrap();
    let bare_addr = serve(bare_router()).await;
    let redis_addr = serve(redis_router(
        deps.bank.clone(),
        AppId::new("wxbenchceiling0000").unwrap(),
    ))
    .await;

    let cipher = PushCipher::new(AES_KEY).unwrap();
    let pushes = Arc::new(build(n, &cipher));
    let body_bytes = pushes.iter().map(|p| p.body.len()).sum::<usize>() / n;

    let cpu0 = cpu::sample(&mut conn).await;
    let bare_rate = drive(bare_addr, &pushes, concurrency).await;
    let bare_cpu = cpu0.until(&cpu::sample(&mut conn).await);

    let cpu0 = cpu::sample(&mut conn).await;
    let redis_rate = drive(redis_addr, &pushes, concurrency).await;
    let redis_cpu = cpu0.until(&cpu::sample(&mut conn).await);

    let cpu0 = cpu::sample(&mut conn).await;
    let wxpush_rate = drive(events_addr, &pushes, concurrency).await;
    let wxpush_cpu = cpu0.until(&cpu::sample(&mut conn).await);

    let crypto_rate = crypto_alone(&pushes, &cipher);

    // The work was real: one consent stored per event.
    let stored = deps
        .bank
        .consent_total(&env.app, TPL)
        .await
        .expect("consent_total");

    println!(
        "events benchmark: {n} subscribe_msg_popup_events (secure mode, JSON, {body_bytes} B \
         bodies, one accepted template each, N users), {concurrency} keep-alive connections, \
         client and servers in this process, release build"
    );
    println!(
        "{:<52} {:>10}",
        "wxpush events (events/s)",
        format!("{wxpush_rate:.0}")
    );
    println!(
        "{:<52} {:>10}",
        "bare ceiling: read body, answer success (/s)",
        format!("{bare_rate:.0}")
    );
    println!("{:<52} {:>9.0}%", "ratio", 100.0 * wxpush_rate / bare_rate);
    println!(
        "{:<52} {:>10}",
        "ceiling + query + one Redis SET NX (/s)",
        format!("{redis_rate:.0}")
    );
    println!(
        "{:<52} {:>9.0}%",
        "ratio to it",
        100.0 * wxpush_rate / redis_rate
    );
    println!(
        "{:<52} {:>10}",
        "signatures + open + parse alone, 1 thread (/s)",
        format!("{crypto_rate:.0}")
    );
    println!(
        "consents stored: {stored} of {n} events ({})",
        if stored == n as u64 {
            "each event stored once"
        } else {
            "MISMATCH"
        }
    );
    // CPU time per event: cores used / events per second.
    let per_event = |cores: Option<f64>, rate: f64| {
        cores.map_or("n/a".to_string(), |c| format!("{:.1} µs", c * 1e6 / rate))
    };
    println!(
        "CPU per event, wxpush events: bench {} · redis {}; bare ceiling: bench {}; \
         ceiling + SET NX: bench {} · redis {}",
        per_event(wxpush_cpu.me, wxpush_rate),
        per_event(wxpush_cpu.redis, wxpush_rate),
        per_event(bare_cpu.me, bare_rate),
        per_event(redis_cpu.me, redis_rate),
        per_event(redis_cpu.redis, redis_rate),
    );
    println!("cores used, wxpush events:     {wxpush_cpu}");
    println!("cores used, bare ceiling:      {bare_cpu}");
    println!("cores used, ceiling + SET NX:  {redis_cpu}");
    assert_eq!(stored, n as u64, "one consent stored per event");
    deps.broker.close().await;
}
