//! The connection: a single Redis node or a Redis Cluster, behind one cloneable handle.
//!
//! [`connect`] decides which: several URLs are a cluster's seed nodes (any one that answers
//! is enough to learn the slot map); one URL is a single node unless that node reports
//! `cluster_enabled:1` (`INFO cluster`), so a managed cluster's one configuration endpoint
//! works as it is. TLS (`rediss://`) is the same for both: rustls, the system's certificate
//! store, or only the CA given (`WXPUSH_TLS_CA_FILE`) when there is one; on a cluster, the
//! first seed's scheme applies to every node the cluster names (redis-rs refuses seeds that
//! mix schemes, passwords or users).
//!
//! Client issues guarded against here (redis-rs 1.8):
//! - connecting can hang when a node accepts TCP and never answers (a stopped process, a
//!   half-open proxy): every connect is bounded by a timeout of our own around the crate's
//!   (not hit in our runs: a frozen seed made connects fail at the crate's own 3 s);
//! - when every pooled connection of the cluster client goes stale at once (all nodes
//!   restarted), the first command fails with an I/O error (BrokenPipe) before the client
//!   reconnects: that is [`crate::is_transient`], and the roles retry it like Redis being
//!   down, handing the message back (not hit in our runs either);
//! - **hit here:** the cluster client refreshes its slot map only when a node answers `MOVED`,
//!   `ASK` or `READONLY`. A primary that stops answering (frozen, cut off, its host gone
//!   without a reset) only times out, so after its replica is promoted every command for its
//!   slots still goes to it and times out, until it comes back (tests/e2e/redis_cluster.rs, a
//!   primary frozen past its failover: 10 s timeouts for as long as it stayed frozen). The
//!   crate has no call to refresh the map, so [`Conn`] builds a new cluster connection (a
//!   fresh slot map from the nodes that answer) in the background after a command fails with
//!   a timeout or an I/O error, at most once per [`REBUILD_EVERY`], and the commands after it
//!   use that one. A rebuild installs its connection only if no newer one did, and an error
//!   from a connection already replaced starts none. A rebuild learns the slot map from the
//!   seeds given: with one seed that is the frozen node, it cannot (list several seeds).
//!
//! This module must not run application commands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// How long one node may take to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take to be answered.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A cluster connection is rebuilt at most this often (see the module comment).
pub const REBUILD_EVERY: Duration = Duration::from_secs(2);

/// The `host:port` of each primary in a `CLUSTER NODES` reply, those flagged `fail` or
/// `fail?` left out: where something must visit every primary (a `SCAN` of the demo's
/// namespace, the test kit's clean-ups), since a command through the cluster client reaches
/// one node.
pub fn primary_addrs(cluster_nodes: &str) -> Vec<&str> {
    cluster_nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let is_primary = flags.split(',').any(|x| x == "master")
                && !flags.split(',').any(|x| x == "fail" || x == "fail?");
            is_primary.then(|| addr.split('@').next()).flatten()
        })
        .collect()
}

/// A multiplexed connection to Redis: a single node, or a Redis Cluster. Cheap to clone;
/// clones share the connection(s). Commands and pipelines go through
/// [`redis::aio::ConnectionLike`] either way; on a cluster each goes to the primary of its
/// keys' slot, so a pipeline or script must keep to one slot.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(Cluster),
}

/// A Redis Cluster connection that is rebuilt when a node stops answering.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    client: ClusterClient,
    /// The connection in use and its generation (1 for the first, +1 per rebuild).
    current: RwLock<(ClusterConnection, u64)>,
    /// Generations started so far (a rebuild installs its own only if it is newer).
    started: AtomicU64,
    /// When the last rebuild started; `None` before the first.
    rebuilt_at: Mutex<Option<Instant>>,
}

impl Cluster {
    /// Sends `cmd` where `routing` says (a `SCRIPT LOAD` to one slot's primary).
    pub async fn route(
        &self,
        cmd: Cmd,
        routing: redis::cluster_routing::RoutingInfo,
    ) -> RedisResult<Value> {
        let (mut conn, used) = self.current();
        let reply = conn.route_command(cmd, routing).await;
        if let Err(e) = &reply {
            self.rebuild_after(e, used);
        }
        reply
    }

    fn current(&self) -> (ClusterConnection, u64) {
        match self.shared.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a command sent on generation `used` failed: a new connection in the background,
    /// unless `used` is not the current one any more (its error says nothing of the new one)
    /// or a rebuild started within [`REBUILD_EVERY`].
    fn rebuild_after(&self, e: &RedisError, used: u64) {
        if used != self.current().1 {
            return;
        }
        let stalled = e.is_timeout()
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::ClusterDown | redis::ServerErrorKind::MasterDown
                )
            );
        if !stalled {
            return;
        }
        {
            let Ok(mut at) = self.shared.rebuilt_at.lock() else {
                return;
            };
            if at.is_some_and(|t| t.elapsed() < REBUILD_EVERY) {
                return;
            }
            *at = Some(Instant::now());
        }
        let shared = self.shared.clone();
        let generation = shared.started.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            match bounded(
                "reconnecting to the Redis Cluster",
                shared.client.get_async_connection(),
            )
            .await
            {
                Ok(fresh) => {
                    // A slower, older rebuild never replaces a newer one's slot map.
                    if let Ok(mut current) = shared.current.write() {
                        if current.1 < generation {
                            *current = (fresh, generation);
                        }
                    }
                    tracing::info!(
                        "Redis Cluster connection rebuilt after a node stopped answering"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot rebuild the Redis Cluster connection yet")
                }
            }
        });
    }
}

impl Conn {
    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Which connection commands go out on now: it changes when a cluster connection is
    /// rebuilt. A `WAIT` counts the writes of its own connection only, so a write made on an
    /// older generation cannot be confirmed by a `WAIT` on this one: write it again. (Always
    /// 0 on a single node, whose `ConnectionManager` reconnects without saying so: see
    /// docs/operations.md#redis-for-production.)
    pub fn generation(&self) -> u64 {
        match self {
            Conn::Single(_) => 0,
            Conn::Cluster(c) => c.current().1,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => {
                let cluster = c.clone();
                Box::pin(async move {
                    let (mut conn, used) = cluster.current();
                    let reply = conn.req_packed_command(cmd).await;
                    if let Err(e) = &reply {
                        cluster.rebuild_after(e, used);
                    }
                    reply
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => {
                let cluster = c.clone();
                Box::pin(async move {
                    let (mut conn, used) = cluster.current();
                    let reply = conn.req_packed_commands(pipeline, offset, count).await;
                    if let Err(e) = &reply {
                        cluster.rebuild_after(e, used);
                    }
                    reply
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.current().0.get_db(),
        }
    }
}

fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what}: no answer in {} s", CONNECT_TIMEOUT.as_secs() * 2),
    ))
}

/// Bounds `fut` by twice [`CONNECT_TIMEOUT`] (see the module comment: a connect can hang).
async fn bounded<T>(
    what: &str,
    fut: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(what)),
    }
}

/// Connects to Redis at `urls` (one node, or a cluster's seed nodes), failing fast when
/// nothing answers. `ca_pem` (PEM) replaces the system's certificate store for `rediss://`;
/// it is unused for `redis://`.
pub async fn connect(urls: &[&str], ca_pem: Option<&[u8]>) -> RedisResult<Conn> {
    match urls {
        [] => Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "no Redis URL",
        ))),
        [url] => {
            let single = connect_single(url, ca_pem).await?;
            if reports_cluster(&mut single.clone()).await {
                tracing::info!("Redis reports cluster mode: using the cluster client");
                connect_cluster(urls, ca_pem).await
            } else {
                Ok(Conn::Single(single))
            }
        }
        seeds => connect_cluster(seeds, ca_pem).await,
    }
}

async fn connect_single(url: &str, ca_pem: Option<&[u8]>) -> RedisResult<ConnectionManager> {
    let mut client = redis::Client::open(url)?;
    if let Some(pem) = ca_pem {
        let info = client.get_connection_info();
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            };
            client = redis::Client::build_with_tls(info.clone(), certs)?;
        }
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    bounded(
        "connecting to Redis",
        ConnectionManager::new_with_config(client, config),
    )
    .await
}

/// Whether the node says it is part of a cluster. A node that refuses `INFO` (some managed
/// services rename it) is taken as a single node.
async fn reports_cluster(conn: &mut ConnectionManager) -> bool {
    let info: RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(conn).await;
    match info {
        Ok(text) => text.lines().any(|l| l.trim() == "cluster_enabled:1"),
        Err(e) => {
            tracing::debug!(error = %e, "INFO cluster refused: taking Redis as a single node");
            false
        }
    }
}

async fn connect_cluster(seeds: &[&str], ca_pem: Option<&[u8]>) -> RedisResult<Conn> {
    // Few retries inside the client: a command whose reply was lost is sent again by it
    // (its own retries are not idempotent for every script, e.g. a claim would find its own
    // mark), and the roles retry what fails anyway, handing messages back. MOVED and ASK
    // redirects share this budget; 3 is plenty for a slot that moved once.
    let mut builder = ClusterClientBuilder::new(seeds.iter().map(|s| s.to_string()))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(3);
    let tls = seeds.first().is_some_and(|s| s.starts_with("rediss://"));
    if let (Some(pem), true) = (ca_pem, tls) {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        });
    }
    let client = builder.build()?;
    let conn = bounded(
        "connecting to the Redis Cluster",
        client.get_async_connection(),
    )
    .await?;
    Ok(Conn::Cluster(Cluster {
        shared: Arc::new(ClusterShared {
            client,
            current: RwLock::new((conn, 1)),
            started: AtomicU64::new(1),
            rebuilt_at: Mutex::new(None),
        }),
    }))
}
