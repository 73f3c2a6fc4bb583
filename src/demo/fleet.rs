//! The demo's role processes: `ingest`, `dispatch` and the senders, started as children of
//! this same binary with the demo's environment, each logging to its own file.
//!
//! This module owns starting them, noticing one that stopped on its own, and stopping them
//! all (SIGTERM, then SIGKILL after [`STOP_GRACE`]); dropping the [`Fleet`] stops them, so no
//! error path leaves one running. It must not hold role logic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::STOP_GRACE;

/// The role processes; dropping it stops them (SIGTERM, then SIGKILL after a grace period),
/// so no error path leaves one running.
pub(super) struct Fleet {
    logs: PathBuf,
    children: Vec<(String, Child)>,
}

impl Fleet {
    pub(super) fn new(logs: PathBuf) -> Self {
        Self {
            logs,
            children: Vec::new(),
        }
    }

    pub(super) fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the wxpush binary")?;
        let log_path = self.logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `wxpush {}`", args.join(" ")))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Fails when a role has stopped on its own, with the last line it wrote.
    pub(super) fn check_running(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let last = last_line(&self.logs.join(format!("{name}.log")));
                bail!("the {name} role stopped ({status}): {last}");
            }
        }
        Ok(())
    }

    /// SIGTERM to every role, then waits for each (SIGKILL after the grace period).
    /// Returns each role's exit status (`None`: it had to be killed).
    pub(super) fn stop_all(&mut self) -> Vec<(String, Option<ExitStatus>)> {
        for (_, child) in &self.children {
            terminate(child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut out = Vec::new();
        for (name, mut child) in self.children.drain(..) {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            out.push((name, status));
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.stop_all();
        }
    }
}

/// Sends SIGTERM (graceful stop) to a child.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last non-empty line of a role's log (its one-line error, when it failed).
fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(no output)".into())
}
