//! Test kit for wxpush's end-to-end tests (`tests/e2e`) and benchmarks (`benches/`): a crate of
//! its own, a dev-dependency of the root package only, so its TLS proxy's crates (rcgen,
//! tokio-rustls) are never dependencies of the `wxpush` binary. Not part of the product.
//!
//! [`TestEnv`] gives each test its own namespace on the machine's real Redis and RabbitMQ
//! (`WXPUSH_REDIS_URL`, `WXPUSH_AMQP_URL`, or the defaults), so tests run in parallel, and
//! removes every key, queue and exchange of that namespace when dropped, even after a
//! failed assertion. It also runs the real `wxpush` binary with that namespace (the one cargo
//! built beside the running test, [`wxpush_bin`]). Every helper works on one Redis node or a
//! Redis Cluster ([`redis_nodes`]).

pub mod ceiling;
pub mod cpu;
pub mod fleet;
pub mod private_redis;
pub mod proxy;
pub mod redis_nodes;
pub mod sweep;
pub mod tls;

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::options::BasicGetOptions;
use wxpush_broker::publish::{header_text, REASON_CODE_HEADER, REASON_HEADER};
use wxpush_broker::{Broker, Publisher, Topology};
use wxpush_domain::{AppId, Config, Namespace, OpenId, RawConfig};
use wxpush_roles::Deps;

/// The appid every test install uses.
pub const TEST_APP: &str = "wxtest0000000001";

pub fn redis_url() -> String {
    std::env::var("WXPUSH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

pub fn amqp_url() -> String {
    std::env::var("WXPUSH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `text` without ANSI colour escapes (`ESC [ ... m`): what a terminal shows of it.
pub fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix time now, in milliseconds (this process's clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Peak resident memory of a process so far (`VmHWM` of `/proc/<pid>/status`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A benchmark's numeric command-line option (`--name N`), or `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A formId shaped like WeChat's: 32 lowercase hex digits, unique per `(seed, n)`.
pub fn form_id(seed: u64, n: u64) -> String {
    format!(
        "{:016x}{:016x}",
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        n
    )
}

/// The `wxpush` binary cargo built beside the running test or benchmark
/// (`target/<profile>/wxpush`; `WXPUSH_BIN` overrides).
pub fn wxpush_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("WXPUSH_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("wxpush{}", std::env::consts::EXE_SUFFIX))
}

/// One test's private install: a namespace, its configuration, and clean-up on drop.
pub struct TestEnv {
    pub ns: Namespace,
    pub app: AppId,
    vars: HashMap<String, String>,
    /// Processes started by [`TestEnv::spawn`] and [`TestEnv::spawn_with`], killed on drop
    /// if still running (a test that fails mid-way leaves no role behind).
    spawned: std::sync::Mutex<Vec<u32>>,
}

impl TestEnv {
    /// A new namespace named after the test (`t-<name>-<pid>-<n>`).
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect();
        let ns = format!("t-{short}-{}-{n}-{nanos:x}", std::process::id());
        let mut vars = HashMap::new();
        vars.insert("WXPUSH_NAMESPACE".into(), ns.clone());
        vars.insert("WXPUSH_REDIS_URL".into(), redis_url());
        vars.insert("WXPUSH_AMQP_URL".into(), amqp_url());
        vars.insert("WXPUSH_APP_ID".into(), TEST_APP.into());
        // Many roles run at once on one machine: each serves its endpoints on a free port.
        vars.insert("WXPUSH_HTTP_ADDR".into(), "127.0.0.1:0".into());
        // The suite and the benches run on quorum queues (the default) unless the process
        // says otherwise: `WXPUSH_QUEUE_TYPE=classic cargo test` runs them on classic ones.
        if let Ok(t) = std::env::var("WXPUSH_QUEUE_TYPE") {
            vars.insert("WXPUSH_QUEUE_TYPE".into(), t);
        }
        Self {
            ns: Namespace::new(&ns).expect("test namespace is valid"),
            app: AppId::new(TEST_APP).expect("test appid is valid"),
            vars,
            spawned: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sets a `WXPUSH_*` variable for [`TestEnv::config`] and spawned binaries.
    pub fn set(&mut self, var: &str, value: &str) -> &mut Self {
        self.vars.insert(var.into(), value.into());
        self
    }

    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    pub fn config(&self) -> Config {
        RawConfig::from_map(&self.vars)
            .validate()
            .expect("test configuration is valid")
    }

    /// The install's exchanges and queues: with several apps configured (`WXPUSH_CONFIG`),
    /// each app's send lane too.
    pub fn topology(&self) -> Topology {
        match RawConfig::from_map(&self.vars).validate() {
            Ok(c) => Topology::for_config(&c),
            Err(_) => Topology::new(self.ns.clone()),
        }
    }

    /// Connections to Redis and RabbitMQ. A failure panics with the services' state
    /// ([`sweep::services_state`]: load, the broker's sockets, descriptors and alarms), so
    /// that a run that lost its broker says why.
    pub async fn deps(&self) -> Deps {
        match Deps::connect(&self.config(), "wxpush-test").await {
            Ok(deps) => deps,
            Err(e) => panic!(
                "Redis and RabbitMQ are reachable (run scripts/services.sh): {e}\n{}",
                sweep::services_state()
            ),
        }
    }

    /// Publishes upload bodies to `<ns>.formids` with confirms.
    pub async fn publish_uploads(&self, broker: &Broker, bodies: &[Vec<u8>]) {
        let publisher = Publisher::open(broker, self.topology())
            .await
            .expect("publisher");
        for chunk in bodies.chunks(500) {
            publisher
                .publish_all(
                    &self.topology().uploads_exchange(),
                    chunk.iter().map(|b| ("upload", b.as_slice())),
                )
                .await
                .expect("publish uploads");
        }
        publisher.close().await;
    }

    /// Declares the uploads exchange and ingest queue, as `wxpush ingest` does on start, so
    /// messages published before the role runs are kept.
    pub async fn declare_ingest(&self, broker: &Broker) {
        let ch = broker.channel().await.expect("channel");
        self.topology()
            .declare_ingest(&ch)
            .await
            .expect("declare ingest topology");
        let _ = ch.close(200, "ok".into()).await;
    }

    /// Messages ready in a queue (not counting unacknowledged ones).
    pub async fn queue_ready(&self, broker: &Broker, queue: &str) -> u32 {
        broker
            .queue_ready(queue)
            .await
            .expect("RabbitMQ answers")
            .expect("queue exists")
    }

    /// Takes every message from a dead-letter queue: (body, reason code, reason).
    pub async fn drain_dead_letters(
        &self,
        broker: &Broker,
        source: &str,
    ) -> Vec<(Vec<u8>, String, String)> {
        let ch = broker.channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                self.topology().dead_queue(source).into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let headers = m.delivery.properties.headers().clone().unwrap_or_default();
            out.push((
                m.delivery.data.clone(),
                header_text(&headers, REASON_CODE_HEADER).unwrap_or_default(),
                header_text(&headers, REASON_HEADER).unwrap_or_default(),
            ));
        }
        let _ = ch.close(200, "ok".into()).await;
        out
    }

    /// A `wxpush` command with this install's environment (and nothing else of WXPUSH_*).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(wxpush_bin());
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("WXPUSH_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&self.vars);
        cmd
    }

    /// Starts `wxpush <args>` in the background, its output captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_with(args, &[])
    }

    /// Starts `wxpush <args>` in the background with some variables changed.
    pub fn spawn_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Child {
        let child = self
            .command(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wxpush");
        if let Ok(mut pids) = self.spawned.lock() {
            pids.push(child.id());
        }
        child
    }

    /// SIGKILLs every process this install spawned that still runs with its namespace (the
    /// check on the environment keeps a reused pid from being killed).
    fn kill_spawned(&self) {
        let pids = self.spawned.lock().map(|p| p.clone()).unwrap_or_default();
        let marker = format!("WXPUSH_NAMESPACE={}", self.ns);
        for pid in pids {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let ours = env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes());
            if ours {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }

    /// Removes every key, queue and exchange of the namespace.
    pub fn cleanup(&self) {
        redis_nodes::delete_matching(&format!("{}:*", self.ns));
        let topology = self.topology();
        let ns = self.ns.to_string();
        // Drop may run inside a tokio runtime: do the AMQP part on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                // (With several broker nodes listed, the first: they share their queues.)
                let url = amqp_url();
                let first = wxpush_domain::config::split_urls(&url)[0];
                let Ok(broker) =
                    Broker::connect(first, "wxpush-test-cleanup", Duration::from_secs(5)).await
                else {
                    return;
                };
                let _ = broker
                    .delete_all(&topology.all_queues(), &topology.all_exchanges())
                    .await;
                broker.close().await;
                let _ = ns;
            });
        })
        .join();
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_spawned();
        self.cleanup();
    }
}

/// A campaign's outcome counters summed over the shards, without `last_at_ms` (a time).
pub async fn campaign_counts(
    bank: &wxpush_bank::Bank,
    app: &AppId,
    campaign: &str,
) -> std::collections::BTreeMap<String, u64> {
    wxpush_roles::outcomes::read(bank, app, campaign)
        .await
        .expect("read the campaign's counters")
        .into_iter()
        .filter(|(k, _)| k != "last_at_ms")
        .map(|(k, v)| (k, u64::try_from(v).unwrap_or(0)))
        .collect()
}

/// Runs `wxpush <args>` with `env`'s environment to the end.
pub fn run(env: &TestEnv, args: &[&str]) -> Output {
    env.command(args).output().expect("run wxpush")
}

/// A finished command's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished command's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends SIGTERM to `child` (and checks the signal went out); the caller waits for it.
pub fn terminate(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok);
}

/// Every user of `app` in the bank's reachable-user index, walked `page` at a time to the end.
pub async fn reachable_users(bank: &wxpush_bank::Bank, app: &AppId, page: usize) -> Vec<OpenId> {
    let mut users = Vec::new();
    let mut at = Some(wxpush_bank::ReachableCursor::default());
    while let Some(pos) = at {
        let p = bank
            .reachable_page(app, pos, page)
            .await
            .expect("walk the reachable-user index");
        users.extend(p.users);
        at = p.next;
    }
    users
}

/// Polls `check` until it returns true or `limit` passes (a guard against hanging, not a
/// speed assertion). Returns whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every key of the namespace with its TTL in seconds (-1: none), on every primary.
pub async fn keys_with_ttl(env: &TestEnv) -> Vec<(String, i64)> {
    let pattern = format!("{}:*", env.ns);
    let keys = tokio::task::spawn_blocking(move || redis_nodes::scan(&pattern))
        .await
        .expect("scan");
    let mut conn = redis_nodes::conn().await;
    let mut out = Vec::new();
    for k in keys {
        let k = String::from_utf8_lossy(&k).into_owned();
        let ttl: i64 = redis::cmd("TTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        out.push((k, ttl));
    }
    out
}

/// A loopback address with a port free right now (for `WXPUSH_HTTP_ADDR` in tests that must
/// know it in advance).
pub fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address")
}

/// `GET path` over plain HTTP/1.1: the status and the body, or `None` when nothing answers.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, None).await
}

/// `POST path` with a JSON body over plain HTTP/1.1: the status and the body, or `None` when
/// nothing answers.
pub async fn http_post_json(
    addr: std::net::SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, String)> {
    http_request(addr, "POST", path, Some(body.to_string())).await
}

async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(b) = &body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .ok()
        .flatten()
}

/// A child's stderr, collected by a thread as it is written (so a long-running child never
/// blocks on a full pipe, and a test can read it while the child runs).
#[derive(Clone, Default)]
pub struct CapturedStderr(std::sync::Arc<std::sync::Mutex<String>>);

impl CapturedStderr {
    /// Takes the child's stderr pipe (spawned with `Stdio::piped()`).
    pub fn take(child: &mut Child) -> Self {
        use std::io::BufRead;
        let out = Self::default();
        if let Some(pipe) = child.stderr.take() {
            let sink = out.0.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        out
    }

    pub fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
