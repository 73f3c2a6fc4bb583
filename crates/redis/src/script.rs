//! Lua scripts, run by SHA with a reload on `NOSCRIPT`, and the one-slot check.
//!
//! redis-rs's `Script::invoke_async` reloads a missing script, but not inside a pipeline, and
//! the bank sends its scripts in pipelines (a batch of users, a script and its `WAIT`). So the
//! caller builds `EVALSHA` commands ([`Lua::evalsha`]) and runs them through [`run`] or
//! [`run_pipeline`]: on `NOSCRIPT` (a node restarted or flushed, a replica just promoted that
//! never saw the script, a node added to the cluster) every script of the caller's set is
//! loaded (`SCRIPT LOAD`, which the cluster client sends to every node) and the command or
//! pipeline sent once more. That is safe only because the callers' scripts are idempotent or
//! refused whole on `NOSCRIPT`: a script that is missing did not run.
//!
//! Debug builds check ([`check_one_slot`]) that every command or pipeline sent here touches
//! one hash slot: on a single node a cross-slot pipeline works and would hide the mistake
//! until a cluster refuses it with `CROSSSLOT`. This module must not know what the scripts do.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, FromRedisValue, Pipeline, RedisResult, Script, Value};

use crate::Conn;

/// One Lua script, known by its SHA1.
pub struct Lua {
    script: Script,
}

impl Lua {
    pub fn new(source: &str) -> Self {
        Self {
            script: Script::new(source),
        }
    }

    /// `EVALSHA <sha>`; the caller adds the key count, keys and arguments.
    pub fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash());
        cmd
    }

    /// The script's SHA1, hex.
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }
}

/// Loads every script of `set` (on a cluster: on every node).
pub async fn load<C: ConnectionLike + Send>(conn: &mut C, set: &[&Lua]) -> RedisResult<()> {
    for lua in set {
        lua.script.prepare_invoke().load_async(conn).await?;
    }
    Ok(())
}

fn is_noscript(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    )
}

/// Runs `cmd` (an `EVALSHA` of one of `set`'s scripts, or any command), loading `set` and
/// sending it once more on `NOSCRIPT`.
pub async fn run<T: FromRedisValue, C: ConnectionLike + Send>(
    conn: &mut C,
    cmd: &Cmd,
    set: &[&Lua],
) -> RedisResult<T> {
    debug_assert_one_slot(std::iter::once(cmd));
    match cmd.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            load(conn, set).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// Runs `pipe`, loading `set` and sending the pipeline once more on `NOSCRIPT`.
pub async fn run_pipeline<T: FromRedisValue, C: ConnectionLike + Send>(
    conn: &mut C,
    pipe: &Pipeline,
    set: &[&Lua],
) -> RedisResult<T> {
    debug_assert_one_slot(pipe.cmd_iter());
    match pipe.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            load(conn, set).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

/// What [`run_batch`] got back: each command's reply, in the order given, and the tail's
/// reply once per pipeline sent (one on a single node; one per slot on a cluster).
#[derive(Debug, Default)]
pub struct Batch {
    pub replies: Vec<Value>,
    pub tails: Vec<Value>,
}

/// Runs many commands (each touching one slot, as a script does) in as few round trips as
/// the deployment allows: one pipeline on a single node; on a cluster, one pipeline per hash
/// slot, sent concurrently (a cluster refuses a pipeline across slots). `tail` (a `WAIT`) ends
/// every pipeline sent. `NOSCRIPT` is handled as in [`run_pipeline`], per pipeline.
pub async fn run_batch(
    conn: &Conn,
    cmds: Vec<Cmd>,
    tail: Option<&Cmd>,
    set: &[&Lua],
) -> RedisResult<Batch> {
    if cmds.is_empty() {
        return Ok(Batch::default());
    }
    let count = cmds.len();
    let pipeline = |cmds: Vec<Cmd>| {
        let mut pipe = redis::pipe();
        for c in cmds {
            pipe.add_command(c);
        }
        if let Some(t) = tail {
            pipe.add_command(t.clone());
        }
        pipe
    };
    let split =
        |mut replies: Vec<Value>, sent: usize| -> RedisResult<(Vec<Value>, Option<Value>)> {
            let tail_reply = if tail.is_some() { replies.pop() } else { None };
            if replies.len() != sent {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "a pipeline's replies do not match its commands",
                )));
            }
            Ok((replies, tail_reply))
        };
    match conn {
        Conn::Single(_) => {
            let pipe = pipeline(cmds);
            let replies: Vec<Value> = send(&mut conn.clone(), &pipe, set).await?;
            let (replies, tail) = split(replies, count)?;
            Ok(Batch {
                replies,
                tails: tail.into_iter().collect(),
            })
        }
        Conn::Cluster(_) => {
            let mut groups: HashMap<Slot, (Vec<usize>, Vec<Cmd>)> = HashMap::new();
            for (i, cmd) in cmds.into_iter().enumerate() {
                let slot = keys_of(&cmd).first().map(Slot::for_key);
                // A keyless command goes with the first group (or alone).
                let slot = slot.unwrap_or(Slot::for_key(b""));
                let group = groups.entry(slot).or_default();
                group.0.push(i);
                group.1.push(cmd);
            }
            let sends = groups.into_values().map(|(at, cmds)| {
                let sent = cmds.len();
                let pipe = pipeline(cmds);
                let mut conn = conn.clone();
                async move {
                    let replies: Vec<Value> = run_pipeline(&mut conn, &pipe, set).await?;
                    let (replies, tail) = split(replies, sent)?;
                    Ok::<_, redis::RedisError>((at, replies, tail))
                }
            });
            let mut out = Batch {
                replies: vec![Value::Nil; count],
                tails: Vec::new(),
            };
            for (at, replies, tail) in futures_util::future::try_join_all(sends).await? {
                for (i, r) in at.into_iter().zip(replies) {
                    out.replies[i] = r;
                }
                out.tails.extend(tail);
            }
            Ok(out)
        }
    }
}

/// [`run_pipeline`] across slots, which only a single node accepts (a migration from a key
/// layout older than cluster support, a batch): a cluster refuses it (`CROSSSLOT`).
pub async fn run_pipeline_single_node<T: FromRedisValue>(
    conn: &mut Conn,
    pipe: &Pipeline,
    set: &[&Lua],
) -> RedisResult<T> {
    debug_assert!(
        !conn.is_cluster(),
        "a pipeline across slots sent to a cluster"
    );
    send(conn, pipe, set).await
}

/// [`run_pipeline`] without the one-slot check: a single node's batch across slots.
async fn send<T: FromRedisValue>(conn: &mut Conn, pipe: &Pipeline, set: &[&Lua]) -> RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            load(conn, set).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

fn debug_assert_one_slot<'a>(cmds: impl IntoIterator<Item = &'a Cmd>) {
    if cfg!(debug_assertions) {
        if let Err(e) = check_one_slot(cmds) {
            panic!("{e}");
        }
    }
}

/// Commands that name no key (they go wherever the keyed commands beside them go).
const KEYLESS: &[&[u8]] = &[
    b"PING", b"WAIT", b"TIME", b"MULTI", b"EXEC", b"DISCARD", b"SCRIPT", b"INFO", b"ECHO",
];

/// The keys `cmd` names: an `EVAL`'s declared keys, none for [`KEYLESS`] commands, else its
/// first argument (every other command wxpush sends names one key first).
fn keys_of(cmd: &Cmd) -> Vec<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let Some(name) = args.first() else {
        return Vec::new();
    };
    let name = name.to_ascii_uppercase();
    if name.starts_with(b"EVAL") {
        let count = args
            .get(2)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        return args.iter().skip(3).take(count).copied().collect();
    }
    if KEYLESS.contains(&name.as_slice()) {
        return Vec::new();
    }
    args.get(1).copied().into_iter().collect()
}

/// Checks that the keys of `cmds` all hash to one Redis Cluster slot; the error names two
/// keys that do not.
pub fn check_one_slot<'a>(cmds: impl IntoIterator<Item = &'a Cmd>) -> Result<(), String> {
    let mut first: Option<(&[u8], Slot)> = None;
    for cmd in cmds {
        for key in keys_of(cmd) {
            let slot = Slot::for_key(key);
            match first {
                None => first = Some((key, slot)),
                Some((k, s)) if s != slot => {
                    return Err(format!(
                        "keys in two Redis Cluster slots in one script or pipeline: {} and {}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(key)
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sharing_a_hash_tag_pass_and_keys_in_two_slots_are_named() {
        let lua = Lua::new("return 1");
        let mut one = lua.evalsha();
        one.arg(2)
            .arg("ns:c:{app.7}:oA")
            .arg("ns:u:{app.7}")
            .arg("x");
        let mut pipe = redis::pipe();
        pipe.add_command(one.clone());
        pipe.cmd("HGETALL").arg("ns:m:{app.7}:oB");
        pipe.cmd("WAIT").arg(1).arg(1000);
        assert_eq!(check_one_slot(pipe.cmd_iter()), Ok(()));

        pipe.cmd("HGETALL").arg("ns:m:{app.8}:oB");
        let e = check_one_slot(pipe.cmd_iter()).unwrap_err();
        assert!(
            e.contains("ns:c:{app.7}:oA") && e.contains("ns:m:{app.8}:oB"),
            "{e}"
        );

        // An EVAL's arguments are not keys.
        let mut args_only = lua.evalsha();
        args_only
            .arg(1)
            .arg("ns:c:{app.7}:oA")
            .arg("ns:m:{app.8}:oB");
        assert_eq!(check_one_slot(std::iter::once(&args_only)), Ok(()));
    }
}
