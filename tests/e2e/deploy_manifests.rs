//! The Kubernetes manifests in `deploy/k8s/` agree with the code they deploy: every
//! `WXPUSH_*` variable they name is one wxpush reads, probes use the endpoints the roles
//! serve (liveness on `/healthz`, readiness on `/readyz`), the pods' grace period outlasts
//! the roles' shutdown grace, secrets stay out of the ConfigMap, and the autoscalers watch
//! the queue the senders consume. What `kubectl apply -k` applies fails closed: a disruption
//! budget per Deployment, a NetworkPolicy around every pod (egress to DNS, RabbitMQ, Redis and,
//! for the senders, 443; ingress to the metrics port only), and no Secret to overwrite the
//! operator's. `docker-compose.yml` requires the real WeChat settings (`${VAR:?...}`, no
//! default), runs the fake only in profile `demo`, and `deploy/demo.env` points it there
//! (`scripts/check-compose.sh` also runs Compose itself on it, where installed).
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

/// The files `kustomization.yaml` lists under `resources:` (commented-out ones excluded).
fn kustomization_resources() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/kustomization.yaml");
    let text = std::fs::read_to_string(&path).expect("read kustomization.yaml");
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = strip_comment(line).trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('-') {
            inside = line == "resources:";
            continue;
        }
        if let Some(item) = line.trim().strip_prefix("- ").filter(|_| inside) {
            out.push(unquote(item).to_owned());
        }
    }
    assert!(!out.is_empty(), "kustomization.yaml lists no resources");
    out
}

/// The manifests `kubectl apply -k deploy/k8s` applies.
fn applied_manifests() -> Vec<Manifest> {
    let listed = kustomization_resources();
    manifests()
        .into_iter()
        .filter(|m| listed.contains(&m.name))
        .collect()
}

/// The `key: value` pairs directly under `path` in document `doc` (labels, selectors).
fn map_at(entries: &[Entry], doc: usize, path: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.doc == doc && e.path.iter().map(String::as_str).eq(path.iter().copied()))
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    out.sort();
    out
}

fn docs_of_kind(entries: &[Entry], wanted: &str) -> Vec<usize> {
    entries
        .iter()
        .filter(|e| e.path.is_empty() && e.key == "kind" && e.value == wanted)
        .map(|e| e.doc)
        .collect()
}

fn name_of(entries: &[Entry], doc: usize) -> String {
    map_at(entries, doc, &["metadata"])
        .into_iter()
        .find(|(k, _)| k == "name")
        .map_or_else(|| format!("document {doc}"), |(_, v)| v)
}

#[test]
fn every_deployment_has_a_disruption_budget_selecting_its_pods() {
    let entries = entries(&applied_manifests());
    let pdbs = docs_of_kind(&entries, "PodDisruptionBudget");
    let deployments = docs_of_kind(&entries, "Deployment");
    assert!(!deployments.is_empty(), "no Deployment applied");
    for d in deployments {
        let selector = map_at(&entries, d, &["spec", "selector", "matchLabels"]);
        assert!(
            !selector.is_empty(),
            "{}: no selector",
            name_of(&entries, d)
        );
        let budget = pdbs
            .iter()
            .find(|p| map_at(&entries, **p, &["spec", "selector", "matchLabels"]) == selector);
        let Some(&p) = budget else {
            panic!(
                "Deployment {} has no PodDisruptionBudget (applied by kustomization.yaml) \
                 selecting {selector:?}",
                name_of(&entries, d)
            );
        };
        // minAvailable on a one-replica Deployment would block every node drain.
        let spec = map_at(&entries, p, &["spec"]);
        assert!(
            spec.iter().any(|(k, _)| k == "maxUnavailable"),
            "{}: use maxUnavailable",
            name_of(&entries, p)
        );
    }
}

#[test]
fn a_network_policy_confines_every_wxpush_pod_and_lets_only_metrics_in() {
    let entries = entries(&applied_manifests());
    let policies = docs_of_kind(&entries, "NetworkPolicy");
    assert!(!policies.is_empty(), "no NetworkPolicy applied");
    let selects = |policy: usize, pod_labels: &[(String, String)]| {
        map_at(&entries, policy, &["spec", "podSelector", "matchLabels"])
            .iter()
            .all(|l| pod_labels.contains(l))
    };
    let value_in = |doc: usize, under: &str, key: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e.doc == doc && e.under(under) && e.key == key)
            .map(|e| e.value.clone())
            .collect()
    };
    // Egress only to DNS (53), RabbitMQ (5672, 5671), Redis (6379) and, for the senders
    // alone, WeChat over HTTPS (443).
    for &p in &policies {
        for port in value_in(p, "egress", "port") {
            assert!(
                ["53", "5671", "5672", "6379", "443"].contains(&port.as_str()),
                "{}: egress to port {port} is none of DNS, RabbitMQ, Redis, WeChat",
                name_of(&entries, p)
            );
            if port == "443" {
                let selector = map_at(&entries, p, &["spec", "podSelector", "matchLabels"]);
                assert!(
                    selector.contains(&("app.kubernetes.io/component".into(), "send".into())),
                    "{}: only the senders call WeChat (443)",
                    name_of(&entries, p)
                );
            }
        }
        // Ingress only to the metrics port, and only from a selected namespace.
        for port in value_in(p, "ingress", "port") {
            assert!(
                port == "metrics" || port == "9464",
                "{}: ingress to port {port}, not the metrics port",
                name_of(&entries, p)
            );
        }
        if !value_in(p, "ingress", "port").is_empty() {
            assert!(
                entries
                    .iter()
                    .any(|e| e.doc == p && e.under("ingress") && e.under("namespaceSelector")),
                "{}: metrics must be let in from the monitoring namespace only",
                name_of(&entries, p)
            );
        }
    }
    for d in docs_of_kind(&entries, "Deployment") {
        let name = name_of(&entries, d);
        let pods = map_at(&entries, d, &["spec", "template", "metadata", "labels"]);
        let mine: Vec<usize> = policies
            .iter()
            .copied()
            .filter(|&p| selects(p, &pods))
            .collect();
        let types: String = mine
            .iter()
            .flat_map(|&p| map_at(&entries, p, &["spec"]))
            .filter(|(k, _)| k == "policyTypes")
            .map(|(_, v)| v)
            .collect();
        assert!(
            types.contains("Ingress") && types.contains("Egress"),
            "{name}: no NetworkPolicy confines its pods both ways ({pods:?})"
        );
        let ingress: Vec<String> = mine
            .iter()
            .flat_map(|&p| value_in(p, "ingress", "port"))
            .collect();
        assert!(
            !ingress.is_empty(),
            "{name}: nothing may scrape its metrics port"
        );
        let egress: Vec<String> = mine
            .iter()
            .flat_map(|&p| value_in(p, "egress", "port"))
            .collect();
        for needed in ["53", "5672", "6379"] {
            assert!(
                egress.iter().any(|p| p == needed),
                "{name}: no egress to port {needed}"
            );
        }
        let args = map_at(&entries, d, &["spec", "template", "spec", "containers"])
            .into_iter()
            .find(|(k, _)| k == "args")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let calls_wechat = args.contains("send");
        assert_eq!(
            egress.iter().any(|p| p == "443"),
            calls_wechat,
            "{name}: HTTPS egress for the senders, and only for them"
        );
    }
}

#[test]
fn the_kustomization_applies_no_secret_and_lists_only_files_that_exist() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    assert!(
        !kustomization
            .lines()
            .any(|l| strip_comment(l).contains("secretGenerator")),
        "kustomization.yaml generates a Secret: apply -k would overwrite the real one"
    );
    for file in kustomization_resources() {
        assert!(
            dir.join(&file).is_file(),
            "kustomization.yaml lists {file}, which is missing"
        );
    }
    let applied = entries(&applied_manifests());
    let secrets: Vec<String> = docs_of_kind(&applied, "Secret")
        .into_iter()
        .map(|d| name_of(&applied, d))
        .collect();
    assert!(
        secrets.is_empty(),
        "kustomization.yaml applies Secrets {secrets:?}: a placeholder there overwrites the real \
         one at every apply; keep it in secret.example.yaml"
    );
    // The Secrets the Deployments read are the ones the example (and the README) shows.
    let all = entries(&manifests());
    let example: Vec<String> = docs_of_kind(&all, "Secret")
        .into_iter()
        .filter(|d| {
            all.iter()
                .any(|e| e.doc == *d && e.at.starts_with("secret.example.yaml"))
        })
        .map(|d| name_of(&all, d))
        .collect();
    let read: Vec<&Entry> = applied
        .iter()
        .filter(|e| e.key == "name" && e.parent() == Some("secretRef"))
        .collect();
    assert!(!read.is_empty(), "no Deployment reads a Secret");
    for e in read {
        assert!(
            example.contains(&e.value),
            "{}: Secret {} is not in secret.example.yaml",
            e.at,
            e.value
        );
    }
}

// docker-compose.yml

/// What Compose must be given for real: no default may stand in for them.
const COMPOSE_REQUIRED: &[&str] = &[
    "WXPUSH_APP_ID",
    "WXPUSH_APP_SECRET",
    "WXPUSH_WECHAT_API_BASE",
];
/// Read by `wxpush mock-wechat` (clap), not by `RawConfig`.
const MOCK_VARS: &[&str] = &["WXPUSH_MOCK_LISTEN", "WXPUSH_MOCK_CONTROL_TOKEN"];

fn repo_file(path: &str) -> Manifest {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    Manifest {
        name: path.to_owned(),
        text: std::fs::read_to_string(&full)
            .unwrap_or_else(|e| panic!("read {}: {e}", full.display())),
    }
}

/// `KEY=VALUE` lines of an env file.
fn env_file(path: &str) -> Vec<(String, String)> {
    repo_file(path)
        .text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), unquote(v).to_owned()))
        .collect()
}

#[test]
fn compose_requires_the_real_wechat_settings_and_defaults_none_of_them() {
    let compose = repo_file("docker-compose.yml");
    for var in COMPOSE_REQUIRED {
        let needle = format!("${{{var}");
        let uses: Vec<&str> = compose
            .text
            .match_indices(&needle)
            .map(|(i, _)| &compose.text[i + needle.len()..])
            .collect();
        assert!(!uses.is_empty(), "docker-compose.yml never uses {var}");
        for rest in uses {
            let message = rest
                .strip_prefix(":?")
                .map(|m| m.split('}').next().unwrap_or(""));
            assert!(
                message.is_some_and(|m| m.trim().len() > 10),
                "docker-compose.yml: ${{{var}{}...}}: must be ${{{var}:?<what to set>}}, \
                 never a default or a silent empty value",
                &rest[..rest.len().min(20)]
            );
        }
    }
    // Set literally anywhere (`WXPUSH_APP_SECRET: demo-secret`) is a default too.
    for e in entries(&[compose]) {
        if COMPOSE_REQUIRED.contains(&e.key.as_str()) {
            assert!(
                e.value.starts_with(&format!("${{{}:?", e.key)),
                "{}: {} = {:?}: only ${{{}:?...}}",
                e.at,
                e.key,
                e.value,
                e.key
            );
        }
    }
}

#[test]
fn compose_runs_the_fake_only_in_the_demo_profile_and_the_demo_env_points_at_it() {
    let compose = repo_file("docker-compose.yml").text;
    let entries = entries(&[repo_file("docker-compose.yml")]);
    let services: Vec<&str> = entries
        .iter()
        .filter(|e| e.path.len() == 1 && e.path[0] == "services")
        .map(|e| e.key.as_str())
        .collect();
    let field = |service: &str, key: &str| {
        entries
            .iter()
            .find(|e| e.path.len() == 2 && e.path[1] == service && e.key == key)
            .map(|e| e.value.clone())
    };
    let fakes: Vec<&str> = services
        .iter()
        .copied()
        .filter(|s| field(s, "command").is_some_and(|c| c.contains("\"mock-wechat\"")))
        .collect();
    assert_eq!(fakes.len(), 1, "one fake WeChat service: {fakes:?}");
    let fake = fakes[0];
    for s in &services {
        let profiles = field(s, "profiles");
        if *s == fake {
            assert_eq!(
                profiles.as_deref(),
                Some("[\"demo\"]"),
                "{s}: only in profile demo"
            );
        } else if profiles.as_deref() == Some("[\"cluster\"]") {
            // The clusters' nodes, never a role or the fake.
            assert!(
                s.starts_with("redis-node-")
                    || s.starts_with("rabbitmq-")
                    || *s == "redis-cluster-init",
                "{s}: only the clusters' services are in profile cluster"
            );
        } else {
            assert_eq!(profiles, None, "{s} must run without a profile");
        }
    }
    // Profile cluster: the nodes deploy/cluster.env points the roles at exist, and the roles
    // read the URLs it sets.
    let cluster_env = repo_file("deploy/cluster.env").text;
    assert!(cluster_env.contains("COMPOSE_PROFILES=cluster"));
    for node in [
        "rabbitmq-1",
        "rabbitmq-2",
        "rabbitmq-3",
        "redis-node-1",
        "redis-node-2",
        "redis-node-3",
    ] {
        assert!(services.contains(&node), "no service {node}");
        assert!(
            cluster_env.contains(&format!("{node}:")),
            "cluster.env does not use {node}"
        );
    }
    for var in ["COMPOSE_WXPUSH_AMQP_URL", "COMPOSE_WXPUSH_REDIS_URL"] {
        assert!(
            cluster_env.contains(&format!("{var}=")),
            "cluster.env sets {var}"
        );
        assert!(
            compose.contains(&format!("${{{var}:-")),
            "the roles' environment reads {var}"
        );
    }
    for role in ["ingest", "dispatch", "send"] {
        assert!(
            services
                .iter()
                .any(|s| field(s, "command").is_some_and(|c| c == format!("[\"{role}\"]"))),
            "no {role} service"
        );
    }
    // Where the fake listens, from its command line.
    let command = field(fake, "command").unwrap();
    let words: Vec<&str> = command
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|w| w.trim().trim_matches('"'))
        .collect();
    let listen: std::net::SocketAddr = words
        .iter()
        .skip_while(|w| **w != "--listen")
        .nth(1)
        .expect("the fake's --listen")
        .parse()
        .expect("--listen host:port");
    let fake_env: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.path.len() == 3 && e.path[1] == fake && e.path[2] == "environment")
        .collect();
    assert!(
        fake_env
            .iter()
            .any(|e| e.key == "WXPUSH_MOCK_CONTROL_TOKEN"),
        "{fake} gets no WXPUSH_MOCK_CONTROL_TOKEN"
    );

    let demo = env_file("deploy/demo.env");
    let get = |k: &str| {
        demo.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    for var in COMPOSE_REQUIRED {
        assert!(
            get(var).is_some_and(|v| !v.is_empty()),
            "deploy/demo.env sets no {var}"
        );
    }
    assert_eq!(
        get("WXPUSH_WECHAT_API_BASE"),
        Some(format!("http://{fake}:{}", listen.port()).as_str()),
        "deploy/demo.env must point the roles at the fake"
    );
    assert!(
        get("COMPOSE_PROFILES").is_some_and(|p| p.split(',').any(|p| p.trim() == "demo")),
        "deploy/demo.env must enable profile demo"
    );
    if !listen.ip().is_loopback() {
        assert!(
            get("WXPUSH_MOCK_CONTROL_TOKEN").is_some_and(|t| !t.is_empty()),
            "the fake listens on {listen}: its control API needs a token in deploy/demo.env"
        );
    }
}

#[test]
fn every_wxpush_variable_in_compose_is_one_wxpush_reads() {
    for file in ["docker-compose.yml", "deploy/demo.env"] {
        for name in variable_names(&repo_file(file).text) {
            assert!(
                ENV_VARS.contains(&name.as_str())
                    || LOGGING_VARS.contains(&name.as_str())
                    || MOCK_VARS.contains(&name.as_str()),
                "{file}: {name} is not read by wxpush"
            );
        }
    }
}
