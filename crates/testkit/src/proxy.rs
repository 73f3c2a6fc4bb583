//! A TCP proxy the fault tests control, standing between the roles and RabbitMQ or Redis.
//!
//! [`FaultProxy::cut`] closes every open connection at once (what a broker restart or a
//! network blip looks like to a client); [`FaultProxy::down`] also refuses new ones until
//! [`FaultProxy::up`] (an outage). The shared services themselves are never touched. Not
//! part of the product.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy listening on a free loopback port, forwarding to `target`.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    up: AtomicBool,
    accepted: AtomicU64,
    /// Bumped to close every open connection.
    cuts: watch::Sender<u64>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cuts, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            accepted: AtomicU64::new(0),
            cuts,
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !s.up.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let mut cut = s.cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy's address; rewrite a URL's host and port to it with [`FaultProxy::url`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`) pointed at the proxy instead.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (auth, host_path) = match rest.rsplit_once('@') {
            Some((a, h)) => (format!("{a}@"), h),
            None => (String::new(), rest),
        };
        let path = host_path.find('/').map_or("", |i| &host_path[i..]);
        format!("{scheme}://{auth}{}{path}", self.addr)
    }

    /// Closes every open connection; new ones are still accepted.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Closes every open connection and refuses new ones until [`FaultProxy::up`].
    pub fn down(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        self.cut();
    }

    pub fn up(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The address of a `scheme://user:pw@host:port/path` URL (loopback services only).
pub fn target_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_path = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host_path.split('/').next().unwrap_or(host_path);
    let host = host.replace("localhost", "127.0.0.1");
    host.parse().expect("a loopback host:port")
}
