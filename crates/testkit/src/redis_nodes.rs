//! The tests' Redis: one node, or a Redis Cluster when `WXPUSH_REDIS_URL` lists several seed
//! nodes (`eval "$(scripts/cluster.sh env)"`) or its one node reports cluster mode. This is
//! the test kit's cluster switch: every helper here works on both, so the suites run
//! unchanged against either.
//!
//! A cluster spreads a namespace's keys over its primaries: listing them (`SCAN`) asks every
//! primary ([`primaries`]), and deleting them goes key by key (a multi-key `UNLINK` across
//! slots is refused even on one node). This module must not be used by the product.

use std::sync::OnceLock;

use crate::redis_url;

/// The seed URLs of `WXPUSH_REDIS_URL`.
pub fn seeds() -> Vec<String> {
    let url = redis_url();
    wxpush_domain::split_urls(&url)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Whether the tests run against a Redis Cluster (asked once per process).
pub fn is_cluster() -> bool {
    static CLUSTER: OnceLock<bool> = OnceLock::new();
    *CLUSTER.get_or_init(|| {
        let seeds = seeds();
        if seeds.len() > 1 {
            return true;
        }
        let info: Option<String> = redis::Client::open(seeds[0].as_str())
            .ok()
            .and_then(|c| c.get_connection().ok())
            .and_then(|mut c| redis::cmd("INFO").arg("cluster").query(&mut c).ok());
        info.is_some_and(|i| i.lines().any(|l| l.trim() == "cluster_enabled:1"))
    })
}

/// `url` with its host and port replaced by `addr` (`host:port`), keeping scheme, login and
/// database.
fn with_addr(url: &str, addr: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (login, hostpath) = match rest.rsplit_once('@') {
        Some((login, hp)) => (format!("{login}@"), hp),
        None => (String::new(), rest),
    };
    let path = hostpath.find('/').map_or("", |i| &hostpath[i..]);
    format!("{scheme}://{login}{addr}{path}")
}

/// The URL of every primary: the one node, or each primary of the cluster now
/// (`CLUSTER NODES`, asked of the first seed that answers).
pub fn primaries() -> Vec<String> {
    let seeds = seeds();
    if !is_cluster() {
        return seeds;
    }
    for seed in &seeds {
        let nodes: Option<String> = redis::Client::open(seed.as_str())
            .ok()
            .and_then(|c| c.get_connection().ok())
            .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok());
        let Some(nodes) = nodes else { continue };
        return wxpush_redis::primary_addrs(&nodes)
            .into_iter()
            .map(|addr| with_addr(seed, addr))
            .collect();
    }
    Vec::new()
}

/// A blocking connection that follows the cluster's slots when there is one.
pub fn sync_conn() -> Box<dyn redis::ConnectionLike> {
    if is_cluster() {
        let client = redis::cluster::ClusterClient::new(seeds()).expect("cluster seeds");
        Box::new(client.get_connection().expect("redis cluster"))
    } else {
        let client = redis::Client::open(redis_url()).expect("redis url");
        Box::new(client.get_connection().expect("redis"))
    }
}

/// An async connection as the roles make it (`wxpush_redis::connect`).
pub async fn conn() -> wxpush_redis::Conn {
    let seeds = seeds();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    wxpush_redis::connect(&seeds, None).await.expect("redis")
}

/// `INFO <section>` of every primary: one text on a single node; on a cluster the client
/// asks each primary and gets a map of node to text.
pub async fn info_per_node(conn: &mut wxpush_redis::Conn, section: &str) -> Vec<String> {
    let reply: redis::RedisResult<redis::Value> =
        redis::cmd("INFO").arg(section).query_async(conn).await;
    let text = |v: &redis::Value| -> Option<String> {
        match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::VerbatimString { text, .. } => Some(text.clone()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    match reply {
        Ok(redis::Value::Map(nodes)) => nodes.iter().filter_map(|(_, v)| text(v)).collect(),
        Ok(v) => text(&v).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// Every key matching `pattern`, on every primary, as raw bytes.
pub fn scan(pattern: &str) -> Vec<Vec<u8>> {
    primaries()
        .iter()
        .filter_map(|node| node_scan(node, pattern))
        .flat_map(|(_, keys)| keys)
        .collect()
}

/// Deletes every key matching `pattern`, on every primary (best effort: for clean-ups), one
/// `UNLINK` per key (a multi-key `UNLINK` across slots is refused even on one node).
pub fn delete_matching(pattern: &str) {
    for node in primaries() {
        let Some((mut conn, keys)) = node_scan(&node, pattern) else {
            continue;
        };
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("UNLINK").arg(k).ignore();
            }
            let _: Result<(), _> = pipe.query(&mut conn);
        }
    }
}

/// The keys of one node matching `pattern` (`SCAN`), with the connection that found them;
/// `None` when the node does not answer.
fn node_scan(node: &str, pattern: &str) -> Option<(redis::Connection, Vec<Vec<u8>>)> {
    let mut conn = redis::Client::open(node)
        .and_then(|c| c.get_connection())
        .ok()?;
    let keys: Vec<Vec<u8>> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(10_000)
        .clone()
        .iter(&mut conn)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default();
    Some((conn, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_address_replaces_the_seeds_keeping_login_and_database() {
        assert_eq!(
            with_addr("redis://:p%40w@127.0.0.1:7000/0", "10.0.0.2:7003"),
            "redis://:p%40w@10.0.0.2:7003/0"
        );
        assert_eq!(with_addr("rediss://h:7000", "h2:7001"), "rediss://h2:7001");
    }
}
