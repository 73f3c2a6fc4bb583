//! What operators see of a running role: `/healthz`, `/readyz` and `/metrics` over HTTP, the
//! Prometheus recorder behind `/metrics`, the Redis probe behind `/readyz`, and the logs: the
//! layer that caps other crates' log levels, and the writer that scrubs secrets.
//!
//! Secrets are kept out of the logs twice over. [`log_layer`] never lets an event of another
//! crate than wxpush's own be formatted above INFO, whatever `WXPUSH_LOG` says (lapin logs its
//! login frame, password bytes included, at TRACE). And every line written, and the one-line
//! error `main` ends with, goes through the process's [`Scrubber`], which knows every secret
//! of the configuration in every form it may be printed in.
//!
//! The roles record metrics through the `metrics` facade and report their state in a
//! [`Health`]; this module only installs, probes and serves. It must not hold role logic.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::RwLock;
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
    let mut body = serde_json::json!({"ready": r.ready, "redis": r.redis, "consuming": roles});
    if let Some(d) = &r.durability {
        // What Redis's settings can lose (docs/operations.md#redis-for-production).
        body["redis_durability"] = serde_json::json!({
            "appendonly": d.appendonly.shown(),
            "maxmemory_policy": d.maxmemory_policy.shown(),
            "at_risk": !d.risks().is_empty(),
            "risks": d.risks(),
        });
    }
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

// ---------------------------------------------------------------------------------------------
// Logs

/// The most verbose level at which an event of another crate than wxpush's own is formatted,
/// whatever `WXPUSH_LOG` asks. Above it, lapin logs every frame (the login frame holds the AMQP
/// password as bytes), amq-protocol-tcp the connection URI, reqwest and hyper-util connection
/// keys that may hold a URL's userinfo; at INFO and below, none of them formats a credential.
pub const OTHER_CRATES_MAX_LEVEL: tracing::Level = tracing::Level::INFO;

/// Whether `target` is one of wxpush's own crates (`wxpush`, `wxpush_roles`, ...).
fn is_ours(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    krate == "wxpush" || krate.starts_with("wxpush_")
}

/// The log output: human-readable or JSON lines through `writer`, filtered by `filter`
/// (`WXPUSH_LOG`) **and** by the cap on other crates ([`OTHER_CRATES_MAX_LEVEL`]), spans and
/// events alike. Both filters must pass, so no directive (`trace`, `lapin=trace`) lifts the
/// cap; an event the two reject is never built, its fields never formatted.
pub fn log_layer<S, W>(
    filter: tracing_subscriber::EnvFilter,
    json: bool,
    writer: W,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::Layer;
    let cap = filter_fn(|meta| is_ours(meta.target()) || *meta.level() <= OTHER_CRATES_MAX_LEVEL);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let format: Box<dyn Layer<S> + Send + Sync> = if json {
        Box::new(fmt.json())
    } else {
        Box::new(fmt)
    };
    format.with_filter(filter.and(cap))
}

/// Secrets shorter than this are not masked: masking a 1-3 byte string would turn every
/// occurrence of it in the logs (digits, common syllables) into `***` and make them
/// unreadable, and such a secret protects nothing anyway.
pub const MIN_SECRET_BYTES: usize = 4;

/// Every secret of the install, each in every form it may be printed in, and the text they
/// are masked in: the process's log lines and its final error line. One per process
/// ([`scrubber`]); `main` gives it the configuration's secrets before anything is logged,
/// valid configuration or not, and again after validation.
pub struct Scrubber {
    /// Longest first, so a form is masked whole before a shorter one found inside it.
    needles: RwLock<Vec<String>>,
}

static SCRUBBER: Scrubber = Scrubber::new();

/// The process's scrubber.
pub fn scrubber() -> &'static Scrubber {
    &SCRUBBER
}

impl Scrubber {
    pub const fn new() -> Self {
        Self {
            needles: RwLock::new(Vec::new()),
        }
    }

    /// Masks `secret` from now on, in each of its [`forms`] (not when it is shorter than
    /// [`MIN_SECRET_BYTES`]).
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_BYTES {
            return;
        }
        let Ok(mut needles) = self.needles.write() else {
            return;
        };
        for form in forms(secret) {
            if form.len() >= MIN_SECRET_BYTES && !needles.contains(&form) {
                needles.push(form);
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    pub fn add_all(&self, secrets: &[wxpush_domain::Secret]) {
        for s in secrets {
            self.add(s.expose());
        }
    }

    /// `text` with every known secret, and the values of `access_token=`, `secret=` and JSON
    /// `"access_token"` (tokens fetched at run time), replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if let Ok(needles) = self.needles.read() {
            for n in needles.iter() {
                if out.contains(n.as_str()) {
                    out = out.replace(n.as_str(), "***");
                }
            }
        }
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
}

/// The forms a secret may be printed in, by us or by a dependency: as given and
/// percent-decoded (a URL's password is given encoded); each of those percent-encoded
/// (upper- and lower-case hex, all but letters and digits or all but URL-unreserved
/// characters, and form-encoded), in base64 (standard and URL-safe; unpadded, which masks the
/// padded form too), as its bytes in decimal (`[104, 117, ...]`, lapin's frames), and escaped
/// as `{:?}` and JSON escape it.
pub fn forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    let decoded = wxpush_domain::config::percent_decode(secret);
    let mut out = Vec::new();
    for base in [secret, decoded.as_str()] {
        out.push(base.to_owned());
        for set in [NON_ALPHANUMERIC, UNRESERVED] {
            let upper = utf8_percent_encode(base, set).to_string();
            out.push(lower_hex(&upper));
            out.push(upper);
        }
        out.push(
            utf8_percent_encode(base, FORM)
                .to_string()
                .replace("%20", "+"),
        );
        out.push(STANDARD_NO_PAD.encode(base));
        out.push(URL_SAFE_NO_PAD.encode(base));
        let bytes: Vec<String> = base.bytes().map(|b| b.to_string()).collect();
        out.push(bytes.join(", "));
        out.push(bytes.join(","));
        let debug = format!("{base:?}");
        let debug = &debug[1..debug.len() - 1];
        let json = serde_json::to_string(base).unwrap_or_default();
        let json = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default();
        let json_of_debug = serde_json::to_string(debug).unwrap_or_default();
        let json_of_debug = json_of_debug
            .get(1..json_of_debug.len().saturating_sub(1))
            .unwrap_or_default();
        out.extend([debug, json, json_of_debug].map(str::to_owned));
    }
    out.sort();
    out.dedup();
    out
}

/// `%2F` → `%2f`: the hex digits of percent-escapes in lower case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            out.push(c);
            if c == '%' {
                hex_left = 2;
            }
        }
    }
    out
}

/// Log output to stderr through the process's [`Scrubber`], whoever wrote the line.
#[derive(Clone, Copy)]
pub struct ScrubbedStderr {
    scrubber: &'static Scrubber,
}

impl ScrubbedStderr {
    pub fn new(scrubber: &'static Scrubber) -> Self {
        Self { scrubber }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedLine {
            buf: Vec::with_capacity(256),
            scrubber: self.scrubber,
        }
    }
}

/// One event's output, scrubbed and written to stderr at once when dropped.
pub struct ScrubbedLine {
    buf: Vec<u8>,
    scrubber: &'static Scrubber,
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
        let clean = self.scrubber.scrub(&text);
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
    }
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
    use super::*;

    fn leaked<'a>(text: &str, secrets: &[&'a str]) -> Vec<&'a str> {
        secrets
            .iter()
            .copied()
            .filter(|s| text.contains(s))
            .collect()
    }

    #[test]
    fn scrubs_tokens_and_the_secret_wherever_they_appear() {
        let s = Scrubber::new();
        s.add("S3CR3T");
        let line = "GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3CR3T HTTP/1.1 \
                    url=/send?access_token=TOK123&x=1 {\"access_token\":\"TOK456\",\"expires_in\":7200} \
                    raw S3CR3T";
        let clean = s.scrub(line);
        for leaked in ["S3CR3T", "TOK123", "TOK456"] {
            assert!(!clean.contains(leaked), "{leaked} in {clean}");
        }
        assert!(clean.contains("access_token=***&x=1"), "{clean}");
        assert!(clean.contains("\"expires_in\":7200"), "{clean}");
        assert_eq!(Scrubber::new().scrub("nothing here\n"), "nothing here\n");
    }

    #[test]
    fn every_form_of_a_url_password_is_masked() {
        // The password as the URL holds it (percent-encoded), and what it stands for.
        let given = "Zm9v%2FYmFy%2Bc%40w%252F";
        let password = "Zm9v/YmFy+c@w%2F";
        let s = Scrubber::new();
        s.add(given);
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        use base64::Engine;
        let decimal = password.bytes().map(|b| b.to_string()).collect::<Vec<_>>();
        let printed = [
            given.to_owned(),
            password.to_owned(),
            "Zm9v%2fYmFy%2bc%40w%252F".to_owned(),
            STANDARD.encode(password),
            URL_SAFE.encode(password),
            format!("{:?}", password.as_bytes()),
            decimal.join(","),
            // lapin's login frame: `\0user\0password` as bytes.
            format!(
                "LongString({:?})",
                [b"\0u\0".as_slice(), password.as_bytes()].concat()
            ),
        ];
        for p in &printed {
            let clean = s.scrub(&format!("before {p} after"));
            assert!(
                clean.starts_with("before ") && clean.ends_with(" after"),
                "{clean}"
            );
            let first_bytes = decimal[..4].join(", ");
            let found = leaked(&clean, &[password, given, &first_bytes]);
            assert!(found.is_empty(), "{found:?} in {clean}");
            assert!(clean.contains("***"), "{clean}");
        }
    }

    #[test]
    fn secrets_escaped_by_debug_or_json_are_masked_and_short_ones_ignored() {
        let s = Scrubber::new();
        s.add("q\"uo\\te");
        s.add("abc");
        let clean = s.scrub(r#"{"fields":{"v":"q\"uo\\te","d":"\"q\\\"uo\\\\te\""}} abc"#);
        assert_eq!(clean, r#"{"fields":{"v":"***","d":"\"***\""}} abc"#);
    }

    #[test]
    fn other_crates_log_nothing_above_info_whatever_wxpush_log_says() {
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
            type Writer = Captured;
            fn make_writer(&'a self) -> Captured {
                self.clone()
            }
        }
        for (directive, json) in [("trace", false), ("lapin=trace,wxpush_roles=trace", true)] {
            let out = Captured::default();
            let layer = log_layer(
                tracing_subscriber::EnvFilter::new(directive),
                json,
                out.clone(),
            );
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::trace_span!(target: "lapin::io_loop", "io_loop", uri = "amqp://u:span-secret@h");
                let _in = span.enter();
                tracing::trace!(target: "lapin::io_loop", next_msg = "frame-secret", "will write");
                tracing::debug!(target: "amq_protocol_tcp", "debug-secret");
                tracing::debug!(target: "reqwest::connect", "debug-secret");
                tracing::info!(target: "lapin::channel", "lapin-info");
                tracing::trace!(target: "wxpush_roles::send", "own-trace");
                tracing::debug!(target: "wxpush::ops", "own-debug");
            });
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            let found = leaked(&text, &["span-secret", "frame-secret", "debug-secret"]);
            assert!(found.is_empty(), "{directive}: {found:?} in {text}");
            for shown in ["lapin-info", "own-trace"] {
                assert!(
                    text.contains(shown),
                    "{directive}: {shown} missing from {text}"
                );
            }
        }
    }
}
