//! Test support: a namespace of its own per test on the machine's real Redis
//! (`WXPUSH_REDIS_URL` or `redis://127.0.0.1:6379/0`), removed with SCAN MATCH + UNLINK when
//! dropped (also after a failed assertion), and the fake WeChat wiring.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wxpush_domain::{AppId, Namespace, Secret, TokenSource};
use wxpush_fake_wechat::{FakeConfig, FakeHandle, FakeWeChat, DEFAULT_APP_ID, DEFAULT_SECRET};
use wxpush_fleet::{TokenSettings, TokenStore};
use wxpush_wechat::{Client, ClientConfig};

pub fn redis_url() -> String {
    std::env::var("WXPUSH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A namespace of its own, `t-fleet-<name>-<pid>-<n>`, deleted when dropped.
pub struct TestNs {
    pub ns: Namespace,
}

impl TestNs {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let ns = format!("t-fleet-{name}-{}-{n}", std::process::id());
        Self::named(&ns)
    }

    /// An existing namespace (a child process's view of its parent's); not deleted on drop
    /// by the child, as the parent does it.
    pub fn named(ns: &str) -> Self {
        Self {
            ns: Namespace::new(ns).unwrap(),
        }
    }

    /// Every key of the namespace with its PTTL.
    pub fn keys_with_pttl(&self) -> Vec<(String, i64)> {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys = scan(&mut conn, &format!("{}:*", self.ns));
        keys.into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut conn).unwrap();
                (k, ttl)
            })
            .collect()
    }
}

fn scan(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(10_000)
        .clone()
        .iter(conn)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.ns);
        if let Ok(client) = redis::Client::open(redis_url()) {
            if let Ok(mut conn) = client.get_connection() {
                let keys = scan(&mut conn, &pattern);
                for chunk in keys.chunks(1000) {
                    let _: Result<i64, _> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
                }
            }
        }
    }
}

/// A connection of its own, as a separate process would have.
pub async fn conn() -> wxpush_redis::Conn {
    let url = redis_url();
    wxpush_redis::connect(&wxpush_domain::split_urls(&url), None)
        .await
        .unwrap()
}

/// A fake WeChat whose tokens live `lifetime_ms`.
pub async fn fake(lifetime_ms: u64) -> FakeHandle {
    FakeWeChat::start(FakeConfig {
        token_lifetime_ms: lifetime_ms,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

pub fn client(base_url: &str) -> Client {
    Client::new(&ClientConfig::with_base_url(base_url)).unwrap()
}

pub fn app() -> AppId {
    AppId::new(DEFAULT_APP_ID).unwrap()
}

/// Settings for tests: a short minimum refresh interval and quick retries.
pub fn settings() -> TokenSettings {
    TokenSettings {
        min_refresh_interval: Duration::from_millis(100),
        lock_lease: Duration::from_secs(5),
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        ..TokenSettings::default()
    }
}

/// A token store for the fake's default app, on a connection of its own, fetching from
/// `/cgi-bin/token`: the tests of the fleet's sharing, locking and invalidation use the
/// classic source, where every fetch gives a new token, so that each fetch shows.
pub async fn store(ns: &TestNs, base_url: &str, settings: TokenSettings) -> TokenStore {
    store_from(ns, base_url, TokenSource::Classic, settings).await
}

/// A token store for the fake's default app fetching from `source`.
pub async fn store_from(
    ns: &TestNs,
    base_url: &str,
    source: TokenSource,
    settings: TokenSettings,
) -> TokenStore {
    TokenStore::new(
        conn().await,
        ns.ns.clone(),
        client(base_url),
        app(),
        Secret::new(DEFAULT_SECRET),
        source,
        settings,
    )
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Collects everything `tracing` writes, at every level, while the guard lives (this thread).
pub fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || BufWriter(writer.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

pub struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
