//! What operators see of a running role: `/healthz`, `/readyz` and `/metrics` over HTTP, the
//! Prometheus recorder behind `/metrics`, the Redis probe behind `/readyz`, and the log
//! writer that scrubs secrets.
//!
//! The roles record metrics through the `metrics` facade and report their state in a
//! [`Health`]; this module only installs, probes and serves. It must not hold role logic.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wxpush_bank::Bank;
use wxpush_domain::config::{HttpAddr, DEFAULT_HTTP_PORTS};
use wxpush_roles::{Health, Shutdown};

/// Installs the process-wide Prometheus recorder and describes every metric.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(wxpush_roles::metrics::WECHAT_SECONDS.to_owned()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .map_err(|e| anyhow::anyhow!("metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("metrics recorder already installed: {e}"))?;
    wxpush_roles::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        // Drains histogram buffers even when nobody scrapes.
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Serves the endpoints on `addr` until `shutdown` fires; returns the address bound (port 0
/// picks a free one), which is also logged.
pub async fn serve(
    addr: HttpAddr,
    health: Health,
    metrics: PrometheusHandle,
    mut shutdown: Shutdown,
) -> anyhow::Result<SocketAddr> {
    let listener = bind(addr).await?;
    let bound = listener.local_addr()?;
    let ready = health.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || readyz(ready.clone())))
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        );
    if addr.is_default && bound != addr.addr {
        tracing::info!(
            addr = %bound,
            "serving /healthz, /readyz and /metrics on http://{bound} (the default port {} is \
             taken, by another role on this host most likely; set WXPUSH_HTTP_ADDR to choose)",
            addr.addr.port()
        );
    } else {
        tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics on http://{bound}");
    }
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the health and metrics endpoint stopped");
        }
    });
    Ok(bound)
}

/// Binds the endpoints' address. An address the operator gave is used as it is (taken: the
/// role does not start). The default one, when taken, gives way to the next of
/// [`DEFAULT_HTTP_PORTS`] ports (9464 to 9479: one scrape target list covers every role on a
/// host), then to any free port, so several roles run on one host with no variable set.
async fn bind(addr: HttpAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let given = |e: std::io::Error| {
        anyhow::anyhow!("cannot listen on {} (WXPUSH_HTTP_ADDR): {e}", addr.addr)
    };
    let first = tokio::net::TcpListener::bind(addr.addr).await;
    if !addr.is_default {
        return first.map_err(given);
    }
    let mut last = match first {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => e,
        Err(e) => return Err(given(e)),
    };
    let base = addr.addr.port();
    let next = (1..DEFAULT_HTTP_PORTS).filter_map(|i| base.checked_add(i));
    for port in next.chain([0]) {
        match tokio::net::TcpListener::bind(SocketAddr::new(addr.addr.ip(), port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(given(e)),
        }
    }
    Err(given(last))
}

async fn readyz(health: Health) -> impl IntoResponse {
    let r = health.readiness();
    let roles: serde_json::Map<String, serde_json::Value> = r
        .roles
        .iter()
        .map(|(role, consuming)| ((*role).to_owned(), (*consuming).into()))
        .collect();
    let body = serde_json::json!({"ready": r.ready, "redis": r.redis, "consuming": roles});
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

/// Pings Redis every 2 s (1 s timeout) for `/readyz` until `shutdown` fires.
pub fn spawn_redis_probe(bank: Bank, health: Health, mut shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            let up = matches!(
                tokio::time::timeout(Duration::from_secs(1), bank.ping()).await,
                Ok(Ok(()))
            );
            health.set_redis(up);
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}

/// Log output to stderr with secrets scrubbed from every line, whoever wrote it (a
/// dependency's trace output included): `access_token=…` and `secret=…` query values, JSON
/// `"access_token"` values, and the configured app secret wherever it appears.
#[derive(Clone)]
pub struct ScrubbedStderr {
    secret: Option<Arc<str>>,
}

impl ScrubbedStderr {
    pub fn new(secret: Option<String>) -> Self {
        Self {
            secret: secret.filter(|s| !s.is_empty()).map(Into::into),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLine {
            buf: Vec::with_capacity(256),
            secret: self.secret.clone(),
        }
    }
}

/// One event's output, scrubbed and written to stderr at once when dropped.
pub struct ScrubbedLine {
    buf: Vec<u8>,
    secret: Option<Arc<str>>,
}

impl Write for ScrubbedLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let clean = scrub(&text, self.secret.as_deref());
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
    }
}

/// `text` with secret values replaced by `***`.
pub fn scrub(text: &str, secret: Option<&str>) -> String {
    let mut out = match secret {
        Some(s) if text.contains(s) => text.replace(s, "***"),
        _ => text.to_owned(),
    };
    for key in [
        "access_token=",
        "secret=",
        "\"access_token\":\"",
        "\\\"access_token\\\":\\\"",
    ] {
        out = mask_after(&out, key);
    }
    out
}

/// Replaces the value following each `key` (up to a delimiter) with `***`.
fn mask_after(text: &str, key: &str) -> String {
    if !text.contains(key) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i + key.len()]);
        rest = &rest[i + key.len()..];
        let end = rest
            .find(|c: char| {
                matches!(
                    c,
                    '&' | '"' | '\'' | '\\' | ' ' | '\n' | ',' | '}' | ')' | '>'
                )
            })
            .unwrap_or(rest.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrubs_tokens_and_the_secret_wherever_they_appear() {
        let line = "GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3CR3T HTTP/1.1 \
                    url=/send?access_token=TOK123&x=1 {\"access_token\":\"TOK456\",\"expires_in\":7200} \
                    raw S3CR3T";
        let clean = scrub(line, Some("S3CR3T"));
        for leaked in ["S3CR3T", "TOK123", "TOK456"] {
            assert!(!clean.contains(leaked), "{leaked} in {clean}");
        }
        assert!(clean.contains("access_token=***&x=1"), "{clean}");
        assert!(clean.contains("\"expires_in\":7200"), "{clean}");
        assert_eq!(scrub("nothing here\n", None), "nothing here\n");
    }
}
