//! The demo's namespace: claiming it (refusing one that holds data the demo did not create,
//! such as a production install's) and deleting its keys, queues and exchanges.
//!
//! This module owns the marker key (`<ns>:demo`) and the clean-up. It must not touch anything
//! outside the demo's namespace.

use anyhow::{anyhow, bail, Context as _};
use futures_util::{StreamExt as _, TryStreamExt as _};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use wxpush_broker::Topology;
use wxpush_redis::Conn;
use wxpush_roles::Deps;

use super::DEFAULT_NAMESPACE;

/// The key that marks a namespace as the demo's own.
pub(super) fn marker_key(ns: &str) -> String {
    format!("{ns}:demo")
}

/// Refuses a namespace that holds keys or queued work the demo did not create (say, a
/// production install's), so the clean-up never deletes anything but the demo's own data.
pub(super) async fn claim_namespace(
    deps: &Deps,
    topology: &Topology,
    redis: &mut Conn,
    ns: &str,
) -> anyhow::Result<()> {
    let marked: bool = redis::cmd("EXISTS")
        .arg(marker_key(ns))
        .query_async(redis)
        .await
        .context("Redis")?;
    if marked {
        return Ok(());
    }
    let refuse = |what: String| {
        anyhow!(
            "namespace {ns} holds {what} that the demo did not create; the demo deletes its \
             namespace, so it runs only in a new one or its own (the default is \
             {DEFAULT_NAMESPACE}; choose another with --namespace)"
        )
    };
    if ns == wxpush_domain::config::DEFAULT_NAMESPACE {
        bail!(
            "the demo deletes its namespace, so it does not run in {ns}, the default install's; \
             unset WXPUSH_NAMESPACE (the demo's default is {DEFAULT_NAMESPACE}) or choose \
             another with --namespace"
        );
    }
    if let Some(key) = scan_keys(redis, ns, 1).await?.first() {
        return Err(refuse(format!("keys ({key})")));
    }
    let delay: Vec<String> = wxpush_broker::topology::DELAY_TIERS
        .iter()
        .map(|t| topology.delay_queue(*t))
        .collect();
    for q in topology.all_queues().iter().filter(|q| !delay.contains(q)) {
        if let Some(what) = queue_in_use(deps, q).await? {
            return Err(refuse(format!("the queue {q} ({what})")));
        }
    }
    Ok(())
}

/// Whether a queue holds messages or has consumers (a passive declare: a missing queue is
/// not in use, one of any type or arguments is only looked at, and one that cannot be looked
/// at for another reason counts as in use).
async fn queue_in_use(deps: &Deps, queue: &str) -> anyhow::Result<Option<String>> {
    let ch = deps.broker.channel().await?;
    let declared = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    let _ = ch.close(200, "ok".into()).await;
    Ok(match declared {
        Ok(q) if q.message_count() > 0 => Some(format!("{} messages", q.message_count())),
        Ok(q) if q.consumer_count() > 0 => Some(format!("{} consumers", q.consumer_count())),
        Ok(_) => None,
        Err(e) if e.to_string().contains("NOT_FOUND") => None,
        Err(e) => Some(format!(
            "could not be looked at: {}",
            wxpush_domain::short_reason(&e.to_string())
        )),
    })
}

/// Deletes the namespace's queues (the demo's receipts queue included), exchanges and keys
/// (the marker last).
pub(super) async fn wipe_namespace(
    deps: &Deps,
    topology: &Topology,
    redis: &mut Conn,
    ns: &str,
) -> anyhow::Result<()> {
    // The roles' queues, and the demo's own on the receipts (act three).
    let mut queues = topology.all_queues();
    queues.push(super::orders::tap_queue(ns));
    deps.broker
        .delete_all(&queues, &topology.all_exchanges())
        .await?;
    let marker = marker_key(ns);
    let keys: Vec<String> = scan_keys(redis, ns, usize::MAX)
        .await?
        .into_iter()
        .filter(|k| *k != marker)
        .collect();
    // One UNLINK per key on a cluster (a multi-key one must keep to one slot), 64 at a time.
    let chunk = if redis.is_cluster() { 1 } else { 1000 };
    let unlinks: Vec<&[String]> = keys.chunks(chunk).collect();
    futures_util::stream::iter(unlinks)
        .map(|keys| {
            let mut conn = redis.clone();
            async move {
                redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .context("Redis")
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    redis::cmd("UNLINK")
        .arg(&marker)
        .query_async::<()>(redis)
        .await
        .context("Redis")?;
    Ok(())
}

/// Keys of the namespace, up to `limit`. Product code otherwise never SCANs (it is O(all
/// keys)); here it walks only the demo's own namespace, once at the start and once at the end.
/// On a Redis Cluster each primary is walked (a SCAN sent through the cluster client goes to
/// one node and sees only its keys: the demo left most of its keys there).
async fn scan_keys(redis: &mut Conn, ns: &str, limit: usize) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let nodes: Vec<Option<(String, u16)>> = match redis {
        Conn::Single(_) => vec![None],
        Conn::Cluster(c) => primaries(c).await?.into_iter().map(Some).collect(),
    };
    for node in nodes {
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(format!("{ns}:*"))
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = match (&node, &mut *redis) {
                (Some((host, port)), Conn::Cluster(c)) => {
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    });
                    let reply = c.route(cmd, routing).await.context("Redis")?;
                    redis::FromRedisValue::from_redis_value(reply).context("Redis SCAN")?
                }
                _ => cmd.query_async(redis).await.context("Redis")?,
            };
            out.extend(keys);
            if out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(out)
}

/// The cluster's primaries, as `CLUSTER NODES` lists them ([`wxpush_redis::primary_addrs`]).
async fn primaries(c: &wxpush_redis::Cluster) -> anyhow::Result<Vec<(String, u16)>> {
    let reply = c
        .route(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .context("Redis CLUSTER NODES")?;
    let text: String = redis::FromRedisValue::from_redis_value(reply).context("Redis")?;
    Ok(wxpush_redis::primary_addrs(&text)
        .into_iter()
        .filter_map(|addr| {
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect())
}

/// Messages ready in a queue the demo declared (0 when it does not exist).
pub(super) async fn queue_depth(deps: &Deps, queue: &str) -> anyhow::Result<u64> {
    Ok(deps.broker.queue_ready(queue).await?.map_or(0, u64::from))
}
