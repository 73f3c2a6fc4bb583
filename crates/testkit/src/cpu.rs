//! Where a benchmark's CPU time goes: this process, Redis and the broker, read from
//! `/proc/<pid>/stat` (utime + stime) and Redis's own `INFO cpu`, so a figure can say which of
//! the three a 2-core machine ran out of. Redis and the broker count only when they run on
//! this host (found by process name); otherwise their share is `None`.

use std::time::Instant;

/// CPU seconds used so far by this process, Redis and the broker, and when they were read.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    at: Instant,
    me: Option<f64>,
    redis: Option<f64>,
    broker: Option<f64>,
}

/// CPU used between two samples, in cores (CPU seconds per wall second).
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    pub me: Option<f64>,
    pub redis: Option<f64>,
    pub broker: Option<f64>,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<f64>| v.map_or("n/a".to_string(), |c| format!("{c:.2}"));
        write!(
            f,
            "bench {} · redis {} · broker {}",
            show(self.me),
            show(self.redis),
            show(self.broker)
        )
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// The pids of the processes named `comm` on this host.
fn pids_named(comm: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

fn sum_named(comm: &str) -> Option<f64> {
    let pids = pids_named(comm);
    if pids.is_empty() {
        return None;
    }
    Some(pids.iter().filter_map(|p| proc_cpu(p)).sum())
}

/// Reads the three now. Redis's figure is its own (`used_cpu_user + used_cpu_sys`, which
/// counts every thread), so it is right for a Redis on another host too; on a Redis Cluster,
/// the sum over its primaries (replicas are left out).
pub async fn sample(conn: &mut wxpush_redis::Conn) -> CpuSample {
    let nodes = crate::redis_nodes::info_per_node(conn, "cpu").await;
    let per_node = nodes.iter().map(|i| {
        let field = |name: &str| -> Option<f64> {
            i.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(field("used_cpu_user:")? + field("used_cpu_sys:")?)
    });
    let redis = if nodes.is_empty() {
        None
    } else {
        per_node.sum::<Option<f64>>()
    };
    CpuSample {
        at: Instant::now(),
        me: proc_cpu("self"),
        redis,
        broker: sum_named("beam.smp"),
    }
}

impl CpuSample {
    /// Cores used by each from `self` to `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let d = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
        CpuUse {
            me: d(self.me, later.me),
            redis: d(self.redis, later.redis),
            broker: d(self.broker, later.broker),
        }
    }
}
