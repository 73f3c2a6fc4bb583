//! TLS for the end-to-end tests: a throwaway certificate authority and a TLS-terminating TCP
//! proxy in front of the machine's plain RabbitMQ or Redis (tests/e2e/tls.rs).
//!
//! [`TestCa`] generates a CA and writes its certificate to a temporary PEM file (for
//! `WXPUSH_TLS_CA_FILE`, removed on drop). [`TestCa::proxy`] starts a [`TlsProxy`] on
//! `127.0.0.1:0` with a server certificate for `localhost` and `127.0.0.1` signed by that CA: it
//! terminates TLS, forwards the plaintext to the address given, and counts the handshakes that
//! succeeded and failed, so a test can tell a connection really went through TLS.
//!
//! It must not forward to anything but a loopback address, must not be used by product code,
//! and must not install a process-wide rustls provider (it names `ring` explicitly).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A certificate authority made for one test, trusted by nothing but what is told to.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    file: PathBuf,
}

impl TestCa {
    /// A new CA named `wxpush test CA <name>`, its certificate written to a temporary file.
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wxpush test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params
            .self_signed(&key)
            .expect("self-sign the CA certificate")
            .pem();
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect();
        let file = std::env::temp_dir().join(format!(
            "wxpush-test-ca-{short}-{}-{}.pem",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, &pem).expect("write the CA certificate to a temporary file");
        Self {
            issuer: Issuer::new(params, key),
            pem,
            file,
        }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The temporary file holding [`TestCa::pem`], for `WXPUSH_TLS_CA_FILE`.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// [`TestCa::file`] as text, for [`crate::TestEnv::set`].
    pub fn file_str(&self) -> String {
        self.file.display().to_string()
    }

    /// Starts a TLS-terminating proxy to `upstream` (a loopback address), its certificate
    /// (for `localhost` and `127.0.0.1`) signed by this CA. It runs on the current tokio runtime
    /// until dropped.
    pub async fn proxy(&self, upstream: SocketAddr) -> TlsProxy {
        assert!(
            upstream.ip().is_loopback(),
            "the test proxy forwards to this machine only, not to {upstream}"
        );
        let key = KeyPair::generate().expect("generate the server key");
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server certificate and key match");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("listen on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let stats = Arc::new(ProxyStats::default());
        let task = tokio::spawn(serve(
            listener,
            TlsAcceptor::from(Arc::new(config)),
            upstream,
            stats.clone(),
        ));
        TlsProxy { addr, stats, task }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[derive(Default)]
struct ProxyStats {
    handshakes: AtomicU64,
    failed: AtomicU64,
}

/// A TLS-terminating proxy on 127.0.0.1 (see [`TestCa::proxy`]). Stops when dropped.
pub struct TlsProxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TLS handshakes completed: clients that trusted the certificate.
    pub fn handshakes(&self) -> u64 {
        self.stats.handshakes.load(Ordering::Relaxed)
    }

    /// Connections whose TLS handshake failed (a client that refused the certificate, or one
    /// that did not speak TLS).
    pub fn failed_handshakes(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which ends every proxied connection.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    stats: Arc<ProxyStats>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (acceptor, stats) = (acceptor.clone(), stats.clone());
        connections.spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let mut tls = match handshake.await {
                Ok(Ok(tls)) => {
                    stats.handshakes.fetch_add(1, Ordering::Relaxed);
                    tls
                }
                _ => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            if let Ok(mut plain) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// The loopback address a plain `amqp://` or `redis://` URL points at (ports 5672 and 6379
/// when none is given; `localhost` is 127.0.0.1). Panics on any other host: the proxy only
/// forwards to this machine.
pub fn loopback_upstream(url: &str) -> SocketAddr {
    let (scheme, authority, _) = split_url(url);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().expect("a numeric port")),
        _ => (
            host_port,
            if scheme.starts_with("amqp") {
                5672
            } else {
                6379
            },
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>()
            .unwrap_or_else(|_| panic!("{host} is not a loopback address"))
    };
    assert!(ip.is_loopback(), "{ip} is not a loopback address");
    SocketAddr::new(ip, port)
}

/// `url` with the scheme `scheme` and the host `localhost:<port>`, keeping its user, password
/// and path: `amqp://guest:guest@127.0.0.1:5672/%2f` becomes
/// `amqps://guest:guest@localhost:<port>/%2f`.
pub fn via_proxy(url: &str, scheme: &str, port: u16) -> String {
    let (_, authority, path) = split_url(url);
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!(
        "{scheme}://{}localhost:{port}{path}",
        user.unwrap_or_default()
    )
}

/// (scheme, authority, path with its leading `/`).
fn split_url(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (scheme, authority, path)
}
