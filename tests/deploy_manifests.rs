//! The Kubernetes manifests in `deploy/k8s/` agree with the code they deploy: every
//! `WXPUSH_*` variable they name is one wxpush reads, probes use the endpoints the roles
//! serve (liveness on `/healthz`, readiness on `/readyz`), the pods' grace period outlasts
//! the roles' shutdown grace, secrets stay out of the ConfigMap, and the autoscalers watch
//! the queue the senders consume.
//!
//! Pure file reading (no cluster, no Redis, no RabbitMQ). The YAML is read line by line with
//! just enough structure (indentation, list items, documents) for these checks; full schema
//! validation is a separate, offline step described in `deploy/k8s/README.md`.

use std::path::Path;

use wxpush_broker::Topology;
use wxpush_domain::config::{
    DEFAULT_HTTP_ADDR, DEFAULT_NAMESPACE, DEFAULT_SHUTDOWN_SECS, ENV_VARS,
};
use wxpush_domain::Namespace;

/// Read by the binary's logging setup (`src/main.rs`), not by `RawConfig`.
const LOGGING_VARS: &[&str] = &["WXPUSH_LOG", "WXPUSH_LOG_FORMAT"];
/// What a role serves on `WXPUSH_HTTP_ADDR`.
const ENDPOINTS: &[&str] = &["/healthz", "/readyz", "/metrics"];
/// Variables holding passwords: they belong in a Secret, never in a ConfigMap.
const SECRET_VARS: &[&str] = &["WXPUSH_APP_SECRET", "WXPUSH_AMQP_URL", "WXPUSH_REDIS_URL"];

struct Manifest {
    name: String,
    text: String,
}

/// Every `deploy/k8s/*.yaml`, sorted by name.
fn manifests() -> Vec<Manifest> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s");
    let mut out: Vec<Manifest> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| Manifest {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            text: std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no manifests in {}", dir.display());
    out
}

/// One `key: value` line of a manifest (comments removed), with where it sits.
#[derive(Debug, Clone)]
struct Entry {
    /// `file:line`, for messages.
    at: String,
    /// The YAML document of its file (`---` separates them), numbered across all files.
    doc: usize,
    /// The innermost list item it belongs to (0: none), numbered across all files.
    item: usize,
    /// The keys it is nested under, outermost first.
    path: Vec<String>,
    key: String,
    /// The value with its quotes removed; empty when the value is a nested block.
    value: String,
}

impl Entry {
    fn under(&self, key: &str) -> bool {
        self.path.iter().any(|k| k == key)
    }
    fn parent(&self) -> Option<&str> {
        self.path.last().map(String::as_str)
    }
}

fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// The `key: value` entries of every manifest, in order.
fn entries(manifests: &[Manifest]) -> Vec<Entry> {
    let mut out = Vec::new();
    let (mut doc, mut items) = (0, 0);
    for m in manifests {
        doc += 1;
        let mut keys: Vec<(usize, String)> = Vec::new();
        let mut list_items: Vec<(usize, usize)> = Vec::new();
        let mut block_scalar: Option<usize> = None;
        for (n, raw) in m.text.lines().enumerate() {
            let indent = raw.len() - raw.trim_start().len();
            if let Some(at) = block_scalar {
                if raw.trim().is_empty() || indent > at {
                    continue;
                }
                block_scalar = None;
            }
            let line = strip_comment(raw).trim_end();
            if line.trim() == "---" {
                doc += 1;
                keys.clear();
                list_items.clear();
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (mut indent, mut rest) = (indent, line.trim_start());
            while let Some(after) = rest.strip_prefix('-') {
                if !(after.is_empty() || after.starts_with(' ')) {
                    break;
                }
                let content = after.trim_start();
                indent += 1 + after.len() - content.len();
                rest = content;
                list_items.retain(|(i, _)| *i < indent);
                items += 1;
                list_items.push((indent, items));
            }
            list_items.retain(|(i, _)| *i <= indent);
            let (key, value) = if let Some((k, v)) = rest.split_once(": ") {
                (k, v)
            } else if let Some(k) = rest.strip_suffix(':') {
                (k, "")
            } else {
                continue; // a scalar list item (`- ALL`)
            };
            keys.retain(|(i, _)| *i < indent);
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                block_scalar = Some(indent);
            }
            out.push(Entry {
                at: format!("{}:{}", m.name, n + 1),
                doc,
                item: list_items.last().map_or(0, |(_, id)| *id),
                path: keys.iter().map(|(_, k)| k.clone()).collect(),
                key: unquote(key).to_owned(),
                value: unquote(value).to_owned(),
            });
            keys.push((indent, unquote(key).to_owned()));
        }
    }
    out
}

/// The `kind:` of a document.
fn kind(entries: &[Entry], doc: usize) -> &str {
    entries
        .iter()
        .find(|e| e.doc == doc && e.path.is_empty() && e.key == "kind")
        .map_or("", |e| e.value.as_str())
}

/// Every `WXPUSH_*` variable a manifest sets, with its value: ConfigMap and Secret keys, and
/// `env:` items (`name:` beside `value:`).
fn settings(entries: &[Entry]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for e in entries {
        let in_map = matches!(e.parent(), Some("data" | "stringData"))
            && matches!(kind(entries, e.doc), "ConfigMap" | "Secret");
        if in_map && e.key.starts_with("WXPUSH_") {
            out.push((e.key.clone(), e.value.clone(), e.at.clone()));
        }
        if e.under("env") && e.key == "name" && e.value.starts_with("WXPUSH_") {
            let value = entries
                .iter()
                .find(|v| v.item == e.item && v.key == "value" && v.path == e.path)
                .map_or(String::new(), |v| v.value.clone());
            out.push((e.value.clone(), value, e.at.clone()));
        }
    }
    out
}

/// Every `WXPUSH_[A-Z_]+` in a text, comments included.
fn variable_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("WXPUSH_").map(|i| from + i) {
        let mut end = i + "WXPUSH_".len();
        while end < bytes.len() && (bytes[end].is_ascii_uppercase() || bytes[end] == b'_') {
            end += 1;
        }
        let starts_a_word =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_a_word && end > i + "WXPUSH_".len() {
            out.push(text[i..end].to_owned());
        }
        from = end;
    }
    out
}

#[test]
fn every_wxpush_variable_in_the_manifests_is_one_wxpush_reads() {
    let mut unknown = Vec::new();
    let mut seen = Vec::new();
    for m in manifests() {
        for (n, line) in m.text.lines().enumerate() {
            for name in variable_names(line) {
                if !ENV_VARS.contains(&name.as_str()) && !LOGGING_VARS.contains(&name.as_str()) {
                    unknown.push(format!("{}:{}: {name}", m.name, n + 1));
                }
                seen.push(name);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not read by wxpush (wxpush_domain::config::ENV_VARS, WXPUSH_LOG, WXPUSH_LOG_FORMAT):\n{}",
        unknown.join("\n")
    );
    for needed in [
        "WXPUSH_AMQP_URL",
        "WXPUSH_REDIS_URL",
        "WXPUSH_APP_ID",
        "WXPUSH_APP_SECRET",
    ] {
        assert!(
            seen.iter().any(|s| s == needed),
            "{needed} is never set in deploy/k8s"
        );
    }
}

#[test]
fn passwords_are_in_secrets_and_never_in_a_configmap() {
    let entries = entries(&manifests());
    let settings = settings(&entries);
    for (name, _, at) in &settings {
        let in_configmap = entries
            .iter()
            .any(|e| e.at == *at && kind(&entries, e.doc) == "ConfigMap");
        assert!(
            !(in_configmap && SECRET_VARS.contains(&name.as_str())),
            "{at}: {name} holds a password and belongs in a Secret"
        );
        let plain_env = entries
            .iter()
            .any(|e| e.at == *at && e.under("env") && e.key == "name");
        assert!(
            !(plain_env && SECRET_VARS.contains(&name.as_str())),
            "{at}: {name} is set as a plain env value; take it from a Secret"
        );
    }
    for needed in SECRET_VARS {
        assert!(
            entries.iter().any(|e| e.key == *needed
                && kind(&entries, e.doc) == "Secret"
                && matches!(e.parent(), Some("data" | "stringData"))),
            "{needed} is in no Secret"
        );
    }
}

#[test]
fn probes_use_the_endpoints_the_roles_serve() {
    let entries = entries(&manifests());
    let mut probes = 0;
    for e in entries
        .iter()
        .filter(|e| e.key == "path" && e.under("httpGet"))
    {
        probes += 1;
        assert!(
            ENDPOINTS.contains(&e.value.as_str()),
            "{}: probe path {:?} is not one of {ENDPOINTS:?}",
            e.at,
            e.value
        );
        let probe = e.path.iter().rev().find(|k| k.ends_with("Probe"));
        match probe.map(String::as_str) {
            // Liveness must not depend on Redis or RabbitMQ: the roles reconnect by
            // themselves, and a restart would not bring a dependency back.
            Some(p @ ("livenessProbe" | "startupProbe")) => {
                assert_eq!(e.value, "/healthz", "{}: {p} must use /healthz", e.at)
            }
            Some("readinessProbe") => {
                assert_eq!(e.value, "/readyz", "{}: readiness must use /readyz", e.at)
            }
            other => panic!("{}: httpGet outside a probe ({other:?})", e.at),
        }
    }
    // Scrape paths: the annotation and a ServiceMonitor's endpoints.
    for e in entries
        .iter()
        .filter(|e| e.key == "prometheus.io/path" || (e.key == "path" && e.under("endpoints")))
    {
        assert_eq!(e.value, "/metrics", "{}: scrape path", e.at);
    }
    // Every Deployment has both probes.
    let deployments: Vec<usize> = entries
        .iter()
        .filter(|e| e.path.is_empty() && e.key == "kind" && e.value == "Deployment")
        .map(|e| e.doc)
        .collect();
    assert!(!deployments.is_empty(), "no Deployment in deploy/k8s");
    for doc in &deployments {
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(
                entries
                    .iter()
                    .any(|e| e.doc == *doc && e.key == "path" && e.under(probe)),
                "a Deployment ({}) has no {probe}",
                entries.iter().find(|e| e.doc == *doc).unwrap().at
            );
        }
    }
    assert!(probes >= 2 * deployments.len());
}

#[test]
fn the_metrics_port_is_the_one_the_roles_serve_on() {
    let entries = entries(&manifests());
    let default_port = DEFAULT_HTTP_ADDR.rsplit_once(':').unwrap().1.to_owned();
    let configured = settings(&entries)
        .into_iter()
        .find(|(name, _, _)| name == "WXPUSH_HTTP_ADDR")
        .map(|(_, addr, _)| addr.rsplit_once(':').expect("host:port").1.to_owned());
    let port = configured.unwrap_or(default_port);
    let ports: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key == "containerPort" || e.key == "prometheus.io/port")
        .collect();
    assert!(!ports.is_empty(), "no containerPort in deploy/k8s");
    for e in ports {
        assert_eq!(e.value, port, "{}: wxpush serves on port {port}", e.at);
    }
}

#[test]
fn the_grace_period_outlasts_the_shutdown_grace() {
    let entries = entries(&manifests());
    // The roles' own grace: the default, or what a manifest sets.
    let mut shutdown_secs = DEFAULT_SHUTDOWN_SECS;
    for (name, value, at) in settings(&entries) {
        if name == "WXPUSH_SHUTDOWN_SECS" {
            let secs: u64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{at}: WXPUSH_SHUTDOWN_SECS {value:?}"));
            shutdown_secs = shutdown_secs.max(secs);
        }
    }
    let graces: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key == "terminationGracePeriodSeconds")
        .collect();
    for e in &graces {
        let secs: u64 = e
            .value
            .parse()
            .unwrap_or_else(|_| panic!("{}: {:?}", e.at, e.value));
        assert!(
            secs > shutdown_secs,
            "{}: terminationGracePeriodSeconds {secs} must exceed the shutdown grace \
             ({shutdown_secs} s), or Kubernetes kills a role still settling its work",
            e.at
        );
    }
    for e in entries
        .iter()
        .filter(|e| e.path.is_empty() && e.key == "kind" && e.value == "Deployment")
    {
        assert!(
            graces.iter().any(|g| g.doc == e.doc),
            "{}: a Deployment without terminationGracePeriodSeconds",
            e.at
        );
    }
}

#[test]
fn the_autoscalers_watch_the_queue_the_senders_consume() {
    let entries = entries(&manifests());
    let namespace = settings(&entries)
        .into_iter()
        .find(|(name, _, _)| name == "WXPUSH_NAMESPACE")
        .map_or(DEFAULT_NAMESPACE.to_owned(), |(_, ns, _)| ns);
    let ns = Namespace::new(&namespace).expect("WXPUSH_NAMESPACE in deploy/k8s is valid");
    let send_queue = Topology::new(ns).send_queue();
    let queues: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key == "queueName" || (e.key == "queue" && e.under("matchLabels")))
        .collect();
    assert!(!queues.is_empty(), "no autoscaler names a queue");
    for e in queues {
        assert_eq!(
            e.value, send_queue,
            "{}: the senders consume {send_queue}",
            e.at
        );
    }
}
