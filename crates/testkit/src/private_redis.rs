//! A private `redis-server` for tests that need Redis configured otherwise than the machine's
//! shared one (an evicting `maxmemory-policy`, a replica to stop and start again).
//!
//! [`PrivateRedis::start`] runs `redis-server` (found on `PATH`) on a free loopback port, with
//! no persistence and its own working directory, plus the arguments given; it is killed when
//! dropped (only the process it started, by its handle). [`PrivateRedis::replica_of`] starts
//! one replicating another and waits until its link is up. Nothing here touches the shared
//! Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process of the test's own.
pub struct PrivateRedis {
    port: u16,
    args: Vec<String>,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server` with `args` (`["--maxmemory-policy", "volatile-lru"]`) on a free
    /// port, and waits until it answers.
    pub fn start(args: &[&str]) -> Self {
        let port = crate::free_addr().port();
        let dir = std::env::temp_dir().join(format!("wxpush-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the private Redis");
        let mut r = Self {
            port,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            dir,
            child: None,
        };
        r.restart();
        r
    }

    /// Starts a replica of `master` (`--replicaof`) with `args` besides, and waits until its
    /// link to the master is up.
    pub fn replica_of(master: &PrivateRedis, args: &[&str]) -> Self {
        let port = master.port.to_string();
        let mut all = vec!["--replicaof", "127.0.0.1", port.as_str()];
        all.extend_from_slice(args);
        let r = Self::start(&all);
        r.wait_for_link();
        r
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: as a crash, nothing flushed).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same arguments (after
    /// [`PrivateRedis::stop`]) and waits until it answers; a replica also until its link is up.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH");
        self.child = Some(child);
        let started = Instant::now();
        while self.cmd_sync(&["PING"]).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the private redis-server on port {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.args.iter().any(|a| a == "--replicaof") {
            self.wait_for_link();
        }
    }

    /// Waits until this replica's link to its master is up (and its first sync done).
    pub fn wait_for_link(&self) {
        let started = Instant::now();
        loop {
            let info = self.cmd_sync(&["INFO", "replication"]).unwrap_or_default();
            if info.contains("master_link_status:up") && !info.contains("master_sync_in_progress:1")
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the replica on port {} did not link to its master: {info}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command's reply as text (`None` when the server does not answer).
    pub fn cmd_sync(&self, args: &[&str]) -> Option<String> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let v: redis::Value = cmd.query(&mut conn).ok()?;
        Some(text(&v))
    }
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        redis::Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
