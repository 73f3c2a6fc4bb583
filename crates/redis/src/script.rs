//! Lua scripts, run by SHA with a reload on `NOSCRIPT`, and the one-slot check.
//!
//! redis-rs's `Script::invoke_async` reloads a missing script, but not inside a pipeline, and
//! the bank sends its scripts in pipelines (a batch of users, a script and its `WAIT`). So the
//! caller builds `EVALSHA` commands ([`Lua::evalsha`]) and runs them through [`run`] or
//! [`run_pipeline`]: on `NOSCRIPT` (a node restarted or flushed, a replica just promoted that
//! never saw the script, a node added to the cluster) every script of the caller's set is
//! loaded where the command went (`SCRIPT LOAD`; on a cluster, on its slot's primary only) and
//! the command or pipeline sent once more. That is safe only because the callers' scripts are idempotent or
//! refused whole on `NOSCRIPT`: a script that is missing did not run.
//!
//! Debug builds check ([`check_one_slot`]) that every command or pipeline sent here touches
//! one hash slot: on a single node a cross-slot pipeline works and would hide the mistake
//! until a cluster refuses it with `CROSSSLOT`. This module must not know what the scripts do.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Arg, Cmd, FromRedisValue, Pipeline, RedisResult, Script, Value};

use crate::Conn;

/// One Lua script, known by its SHA1.
pub struct Lua {
    script: Script,
    source: String,
}

impl Lua {
    pub fn new(source: &str) -> Self {
        Self {
            script: Script::new(source),
            source: source.to_owned(),
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

/// Loads every script of `set` (on a cluster: on every node, which fails while one does not
/// answer; a role's start-up load is best effort there, see `wxpush_bank`).
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

/// Runs `cmd` (an `EVALSHA` of one of `set`'s scripts, or any command); on `NOSCRIPT`, loads
/// `set` where the command went ([`reload`]) and sends it once more.
pub async fn run<T: FromRedisValue>(conn: &mut Conn, cmd: &Cmd, set: &[&Lua]) -> RedisResult<T> {
    debug_assert_one_slot(std::iter::once(cmd));
    match cmd.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            reload(conn, std::iter::once(cmd), set).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// Runs `pipe`; on `NOSCRIPT`, loads `set` where it went and sends it once more.
pub async fn run_pipeline<T: FromRedisValue>(
    conn: &mut Conn,
    pipe: &Pipeline,
    set: &[&Lua],
) -> RedisResult<T> {
    debug_assert_one_slot(pipe.cmd_iter());
    send(conn, pipe, set).await
}

/// Loads `set` where `cmds` go: on a single node, there; on a cluster, on the primary of
/// their slot only (`SCRIPT LOAD` to every node, the cluster client's default, fails as long
/// as any node, a replica included, does not answer), or on every node when they name no key.
async fn reload<'a>(
    conn: &mut Conn,
    cmds: impl IntoIterator<Item = &'a Cmd>,
    set: &[&Lua],
) -> RedisResult<()> {
    let key = cmds
        .into_iter()
        .flat_map(keys_of)
        .next()
        .map(<[u8]>::to_vec);
    match (conn, key) {
        (Conn::Cluster(cluster), Some(key)) => {
            let route = Route::new(slot_of(&key), SlotAddr::Master);
            for lua in set {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(&lua.source);
                cluster
                    .route(
                        load,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
            }
            Ok(())
        }
        (conn, _) => load(conn, set).await,
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key when
/// it has none, modulo 16384, as Redis computes it.
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// What [`run_batch`] got back: each command's reply, in the order given, and the tail's.
#[derive(Debug, Default)]
pub struct Batch {
    pub replies: Vec<Value>,
    pub tail: Option<Value>,
}

fn mismatched() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "a pipeline's replies do not match its commands",
    ))
}

/// Runs many commands (each touching one slot, as a script does) in as few round trips as
/// the deployment allows: one pipeline on a single node; on a cluster, one pipeline per hash
/// slot, sent concurrently (a cluster refuses a pipeline across slots). `tail` (a `WAIT`)
/// ends the single node's pipeline; on a cluster it is sent once, alone, after every
/// pipeline answered: the cluster client sends a `WAIT` to every primary and keeps the
/// fewest acknowledgements. (One `WAIT` per slot pipeline would block each node's one shared
/// connection once per slot, up to a second each while a replica lags.) `NOSCRIPT` is
/// handled as in [`run_pipeline`], per pipeline.
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
    if !conn.is_cluster() {
        let mut pipe = redis::pipe();
        for c in cmds {
            pipe.add_command(c);
        }
        if let Some(t) = tail {
            pipe.add_command(t.clone());
        }
        let mut replies: Vec<Value> = send(&mut conn.clone(), &pipe, set).await?;
        let tail = if tail.is_some() { replies.pop() } else { None };
        if replies.len() != count {
            return Err(mismatched());
        }
        return Ok(Batch { replies, tail });
    }
    // A command naming no key goes with the keys in slot 0's group.
    let mut groups: HashMap<u16, (Vec<usize>, Pipeline)> = HashMap::new();
    for (i, cmd) in cmds.into_iter().enumerate() {
        let slot = keys_of(&cmd).first().map_or(0, |k| slot_of(k));
        let (at, pipe) = groups
            .entry(slot)
            .or_insert_with(|| (Vec::new(), redis::pipe()));
        at.push(i);
        pipe.add_command(cmd);
    }
    let sends = groups.into_values().map(|(at, pipe)| {
        let mut conn = conn.clone();
        async move {
            let replies: Vec<Value> = run_pipeline(&mut conn, &pipe, set).await?;
            if replies.len() != at.len() {
                return Err(mismatched());
            }
            Ok::<_, redis::RedisError>((at, replies))
        }
    });
    let mut replies = vec![Value::Nil; count];
    for (at, got) in futures_util::future::try_join_all(sends).await? {
        for (i, r) in at.into_iter().zip(got) {
            replies[i] = r;
        }
    }
    let tail = match tail {
        Some(t) => Some(t.query_async(&mut conn.clone()).await?),
        None => None,
    };
    Ok(Batch { replies, tail })
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
            reload(conn, pipe.cmd_iter(), set).await?;
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
    let mut first: Option<(&[u8], u16)> = None;
    for cmd in cmds {
        for key in keys_of(cmd) {
            let slot = slot_of(key);
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
    fn slots_are_redis_own() {
        // As `CLUSTER KEYSLOT` answers on Redis 7.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{a}scratch"), 15495);
        assert_eq!(slot_of(b"{a}scratch"), slot_of(b"a"));
        // An empty tag is no tag: the whole key counts.
        assert_ne!(slot_of(b"{}foo"), slot_of(b""));
        assert_eq!(slot_of(b"x{a}y{b}"), slot_of(b"a"));
        assert_eq!(slot_of(b"ns:c:{app.7}:oA"), slot_of(b"app.7"));
    }

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
