//! What earlier test runs left on the machine's Redis and RabbitMQ, and what the services look
//! like when a test cannot reach them.
//!
//! A test's namespace (`t-<name>-<pid>-<n>-<nanos>`, [`crate::TestEnv::new`]) is deleted when
//! the test ends, but a run that is killed (Ctrl-C, a CI timeout, SIGKILL) leaves its queues,
//! exchanges and keys behind, and a broker that collects thousands of idle quorum queues
//! answers new connections ever more slowly. [`sweep`] deletes the namespaces whose test
//! process no longer runs on this machine; `scripts/test.sh` runs it (the `wxpush-test-sweep`
//! binary) before the suite, and after it to name anything the suite itself left. It only
//! touches names of that shape, and only on local services (a broker shared by several hosts
//! could hold another host's live namespaces, whose pids mean nothing here).
//!
//! [`services_state`] is the diagnosis a failed connection prints: the load, and what
//! `rabbitmq-diagnostics` says of the broker's sockets, file descriptors and alarms.
//!
//! Not part of the product, and never run against anything but the services tests use.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use wxpush_broker::Broker;

/// The namespace a test-made queue, exchange or key belongs to, when that test's process is
/// gone: `t-<name>-<pid>-<n>-<nanos>` up to the first `.` (AMQP) or `:` (Redis), with `<pid>`
/// not running here. `None` for every other name, and for a process that still runs.
pub fn stale_namespace(name: &str) -> Option<&str> {
    let ns = name.split(['.', ':']).next()?;
    let parts: Vec<&str> = ns.split('-').collect();
    let [t, short, pid, n, nanos] = parts.as_slice() else {
        return None;
    };
    let shaped = *t == "t"
        && !short.is_empty()
        && short.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && n.parse::<u32>().is_ok()
        && u32::from_str_radix(nanos, 16).is_ok();
    let pid: u32 = pid.parse().ok()?;
    (shaped && !std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(ns)
}

/// What [`sweep`] found and deleted.
#[derive(Debug, Default)]
pub struct Swept {
    pub namespaces: BTreeSet<String>,
    pub queues: usize,
    pub exchanges: usize,
    pub keys: usize,
    /// What could not be looked at (no `rabbitmqctl`, a service not local), one line each.
    pub skipped: Vec<String>,
}

/// Deletes every queue, exchange and key of a stale test namespace ([`stale_namespace`]) on
/// the services at `redis_url` and `amqp_url`, when they are on this machine. Queues and
/// exchanges are listed with `rabbitmqctl` (AMQP cannot list them) and deleted over AMQP
/// ([`Broker::delete_all`]).
pub async fn sweep(redis_url: &str, amqp_url: &str) -> Swept {
    let mut out = Swept::default();
    if is_local(amqp_url) {
        match (list("list_queues"), list("list_exchanges")) {
            (Ok(queues), Ok(exchanges)) => {
                let mut stale = |names: Vec<String>| -> Vec<String> {
                    names
                        .into_iter()
                        .filter(|n| {
                            stale_namespace(n)
                                .map(|ns| out.namespaces.insert(ns.to_owned()))
                                .is_some()
                        })
                        .collect()
                };
                let (queues, exchanges) = (stale(queues), stale(exchanges));
                match delete_amqp(amqp_url, &queues, &exchanges).await {
                    Ok((q, e)) => (out.queues, out.exchanges) = (q, e),
                    Err(e) => out.skipped.push(format!("RabbitMQ: {e}")),
                }
            }
            (Err(e), _) | (_, Err(e)) => out.skipped.push(format!("RabbitMQ: {e}")),
        }
    } else {
        out.skipped
            .push("RabbitMQ: not on this machine, not swept".into());
    }
    if is_local(redis_url) {
        let keys: Vec<Vec<u8>> = crate::redis_nodes::scan("t-*")
            .into_iter()
            .filter(|k| {
                std::str::from_utf8(k)
                    .ok()
                    .and_then(stale_namespace)
                    .map(|ns| out.namespaces.insert(ns.to_owned()))
                    .is_some()
            })
            .collect();
        out.keys = delete_keys(&keys);
    } else {
        out.skipped
            .push("Redis: not on this machine, not swept".into());
    }
    out
}

/// The names `rabbitmqctl -q <what> name` prints (vhost `/`).
fn list(what: &str) -> Result<Vec<String>, String> {
    let out = Command::new("timeout")
        .args(["60", "rabbitmqctl", "-q", what, "name"])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "rabbitmqctl {what}: {}",
            err.lines()
                .next()
                .unwrap_or("failed (it needs root or the rabbitmq user)")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| *l == "name")
        .map(str::to_owned)
        .collect())
}

async fn delete_amqp(
    url: &str,
    queues: &[String],
    exchanges: &[String],
) -> Result<(usize, usize), String> {
    if queues.is_empty() && exchanges.is_empty() {
        return Ok((0, 0));
    }
    let first = wxpush_domain::config::split_urls(url)[0];
    let connect = || Broker::connect(first, "wxpush-test-sweep", Duration::from_secs(10));
    let (deleted, broker) = match connect().await {
        Ok(b) => (b.delete_all(queues, exchanges).await, b),
        Err(e) => {
            // A broker past its file handles (RabbitMQ 3.x counts three per quorum queue)
            // takes no new connection: its queues go through rabbitmqctl, and then AMQP works.
            let q = delete_queues_ctl(queues).map_err(|c| format!("{e}; then {c}"))?;
            let b = connect()
                .await
                .map_err(|e| format!("{q} queues deleted with rabbitmqctl, then {e}"))?;
            (b.delete_all(&[], exchanges).await.map(|(_, e)| (q, e)), b)
        }
    };
    broker.close().await;
    deleted.map_err(|e| e.to_string())
}

/// Deletes `queues` (vhost `/`) inside the broker with `rabbitmqctl eval`, which needs no AMQP
/// connection: how many. Only names of letters, digits and `_.:-` are passed.
fn delete_queues_ctl(queues: &[String]) -> Result<usize, String> {
    let safe: Vec<&String> = queues
        .iter()
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        })
        .collect();
    let mut deleted = 0;
    for chunk in safe.chunks(200) {
        let names: Vec<String> = chunk.iter().map(|n| format!("<<\"{n}\">>")).collect();
        let expr = format!(
            "length([ok || N <- [{}], {{ok, Q}} <- [rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, N))], \
             element(1, rabbit_amqqueue:delete(Q, false, false, <<\"wxpush-test-sweep\">>)) =:= ok]).",
            names.join(",")
        );
        let out = Command::new("timeout")
            .args(["120", "rabbitmqctl", "-q", "eval", &expr])
            .output()
            .map_err(|e| format!("rabbitmqctl eval: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse::<usize>() {
            Ok(n) if out.status.success() => deleted += n,
            _ => {
                return Err(format!(
                    "rabbitmqctl eval could not delete queues: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .chain(text.lines())
                        .next()
                        .unwrap_or("no answer")
                ))
            }
        }
    }
    Ok(deleted)
}

fn delete_keys(keys: &[Vec<u8>]) -> usize {
    let mut deleted = 0;
    let mut conn = crate::redis_nodes::sync_conn();
    for k in keys {
        let n: Result<usize, _> = redis::cmd("UNLINK").arg(k).query(&mut *conn);
        deleted += n.unwrap_or(0);
    }
    deleted
}

/// True when `url`'s first host is this machine's loopback.
fn is_local(url: &str) -> bool {
    let first = wxpush_domain::config::split_urls(url)[0];
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or("");
    let host_port = host_port.rsplit('@').next().unwrap_or("");
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_matches(['[', ']']);
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// One paragraph on the services' state, for a test that could not reach them: the load, and
/// what `rabbitmq-diagnostics` (where it runs) says of sockets, file descriptors, memory and
/// alarms, and how many queues of stale test namespaces the broker holds.
pub fn services_state() -> String {
    let mut lines = Vec::new();
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        lines.push(format!("load average: {}", load.trim()));
    }
    match Command::new("timeout")
        .args(["30", "rabbitmq-diagnostics", "-q", "status"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let mut keep = false;
            for line in text.lines() {
                let plain = crate::without_ansi(line);
                if plain.is_empty() {
                    continue;
                }
                // A section's heading is bold; without colours, the known headings.
                let heading = line.contains("\u{1b}[1m")
                    || [
                        "Runtime",
                        "Plugins",
                        "Data directory",
                        "Config files",
                        "Log file(s)",
                        "Alarms",
                        "Tags",
                        "Memory",
                        "File Descriptors",
                        "Free Disk Space",
                        "Totals",
                        "Listeners",
                    ]
                    .contains(&plain.as_str());
                if heading {
                    keep = matches!(
                        plain.as_str(),
                        "Alarms" | "Memory" | "File Descriptors" | "Free Disk Space" | "Totals"
                    );
                    if keep {
                        lines.push(format!("broker {plain}:"));
                    }
                    continue;
                }
                // (the memory breakdown's many `name: x gb (y %)` lines left out)
                if keep && !plain.ends_with("%)") {
                    lines.push(format!("  {}", plain.trim()));
                }
            }
        }
        Ok(out) => lines.push(format!(
            "rabbitmq-diagnostics status: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
        )),
        Err(e) => lines.push(format!("rabbitmq-diagnostics: {e}")),
    }
    // RabbitMQ 3.x's file handle accounting, which `status` may not live to report: past its
    // limit (three handles per quorum queue), new connections get no answer.
    if let Ok(out) = Command::new("timeout")
        .args([
            "30",
            "rabbitmqctl",
            "-q",
            "eval",
            "file_handle_cache:info([total_limit, total_used, sockets_limit, sockets_used]).",
        ])
        .output()
    {
        if out.status.success() {
            lines.push(format!(
                "broker file handles: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    }
    if let Ok(queues) = list("list_queues") {
        let stale = queues
            .iter()
            .filter(|q| stale_namespace(q).is_some())
            .count();
        lines.push(format!(
            "broker queues: {} ({stale} of test namespaces whose process is gone: run the test-kit sweep, see scripts/test.sh)",
            queues.len()
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_test_namespaces_of_gone_processes_are_stale() {
        // pid 1 always runs; u32::MAX - 1 never does.
        let gone = u32::MAX - 1;
        let name = format!("t-dash_demo-{gone}-93-2482881a.send.app.wxdemoorders0000");
        assert_eq!(
            stale_namespace(&name),
            Some(format!("t-dash_demo-{gone}-93-2482881a").as_str())
        );
        assert_eq!(
            stale_namespace(&format!("t-a-{gone}-0-ff:ci:{{wx.0}}")),
            Some(format!("t-a-{gone}-0-ff").as_str())
        );
        assert_eq!(stale_namespace("t-dash_demo-1-93-2482881a.send"), None);
        let own = std::process::id();
        assert_eq!(stale_namespace(&format!("t-x-{own}-0-1.send")), None);
        for not_ours in [
            "wxpush.send".to_owned(),
            "wxpush-demo.send".to_owned(),
            format!("t-x-{gone}-0.send"),
            format!("t-x-y-{gone}-0-1.send"),
            format!("t-x-{gone}-0-zz.send"),
            format!("prod-x-{gone}-0-1.send"),
        ] {
            assert_eq!(stale_namespace(&not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn only_loopback_services_are_local() {
        assert!(is_local("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert!(is_local("redis://localhost/0"));
        assert!(is_local("redis://127.0.0.1:7000,redis://127.0.0.1:7001"));
        assert!(is_local("amqp://[::1]:5672"));
        assert!(!is_local("amqp://guest:guest@rabbit.internal:5672/%2f"));
        assert!(!is_local("rediss://u:p@10.0.0.3:6380/0"));
    }
}
