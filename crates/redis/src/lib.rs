//! wxpush's one way to Redis, under the credential bank (`wxpush-bank`) and the fleet's shared
//! state (`wxpush-fleet`).
//!
//! It owns:
//! - **the connection** ([`Conn`], [`connect`]): one cloneable, multiplexed handle that is
//!   either a single node (redis-rs's `ConnectionManager`, which reconnects) or a Redis
//!   Cluster (redis-rs's cluster-async client, which follows `MOVED`/`ASK`, refreshes the
//!   slot map and reconnects). Which one is found out at connect time: several URLs are a
//!   cluster's seed nodes, and one URL is a cluster when its node says `cluster_enabled:1`.
//! - **scripts** ([`Lua`], [`run`], [`run_pipeline`]): sent by SHA (`EVALSHA`), also inside
//!   pipelines, where redis-rs does not load them itself; on `NOSCRIPT` (a restarted,
//!   flushed or newly promoted node) every script of the caller's set is loaded on every node
//!   and the command sent once more. Many one-slot commands go as one pipeline on a single
//!   node and as one pipeline per slot on a cluster ([`run_batch`]). Debug builds check that each script call and each
//!   pipeline touches one hash slot, as Redis Cluster requires.
//! - **the key shape** ([`tagged`]): `<ns>:<kind>:{<tag>}[:<rest>]`, the hash tag before any
//!   outsider's part;
//! - **transient errors** ([`is_transient`]) and **Redis's clock** ([`time_ms`]).
//!
//! This crate must not know any key layout or what a script means: the bank and the fleet
//! own theirs, built with [`tagged`] (so one script's keys share a slot).

mod conn;
mod key;
mod script;

pub use conn::{
    connect, primary_addrs, Cluster, Conn, CONNECT_TIMEOUT, REBUILD_EVERY, RESPONSE_TIMEOUT,
};
pub use key::tagged;
pub use script::{
    check_one_slot, load, run, run_batch, run_pipeline, run_pipeline_single_node, slot_of, Batch,
    Lua,
};

/// True when a Redis error may go away by itself (Redis down, timed out, loading, failing
/// over, a primary just demoted to a replica answering `READONLY`), so the command is worth
/// retrying later. Shared by every crate that talks to Redis.
pub fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::Moved
                    | redis::ServerErrorKind::Ask
            )
        )
}

/// Redis's clock (`TIME`), in Unix milliseconds. On a cluster, any node's: the nodes' clocks
/// are kept close by their hosts, and every script reads its own node's `TIME` anyway.
pub async fn time_ms(conn: &mut Conn) -> redis::RedisResult<i64> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_the_masters_not_failed_without_their_bus_port() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected
e5 127.0.0.1:7004@17004 master,fail? - 0 0 4 connected 10923-16383
";
        assert_eq!(primary_addrs(nodes), ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }

    #[test]
    fn a_demoted_primary_and_a_moving_slot_are_transient_a_bad_script_is_not() {
        use redis::ServerErrorKind as K;
        let server = |kind: K| redis::RedisError::from((redis::ErrorKind::Server(kind), "test"));
        for kind in [
            K::ReadOnly,
            K::TryAgain,
            K::ClusterDown,
            K::BusyLoading,
            K::MasterDown,
        ] {
            assert!(is_transient(&server(kind)), "{kind:?}");
        }
        for kind in [K::CrossSlot, K::NoScript, K::ResponseError] {
            assert!(!is_transient(&server(kind)), "{kind:?}");
        }
    }
}
