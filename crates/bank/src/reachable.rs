//! Streaming the users who hold a usable credential, from the sharded index.
//!
//! A cursor walks the [`SHARDS`](crate::SHARDS) index shards of one app in order, each with
//! `ZSCAN`, which returns every member present for the whole walk at least once (a member
//! may come twice; consumers must be idempotent, as the dispatcher is). Entries whose last
//! credential has expired are removed from a shard as the walk reaches it. Memory is one page,
//! whatever the audience. The cursor is plain data, so a dispatcher can checkpoint it and
//! resume after a crash. This module must not decide what is sent to whom.

use wxpush_domain::{AppId, OpenId};

use crate::{redis_time, Bank, BankError, SHARDS};

/// Where a walk over the index stands. `ReachableCursor::default()` starts at the beginning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReachableCursor {
    /// Index shard being walked.
    pub shard: u16,
    /// `ZSCAN` cursor within that shard (0 = the shard's start).
    pub scan: u64,
}

/// One page of reachable users and where to continue (`None` when the walk is over).
#[derive(Debug, Clone)]
pub struct ReachablePage {
    pub users: Vec<OpenId>,
    pub next: Option<ReachableCursor>,
}

impl Bank {
    /// Reads the next page of users of `app` holding a usable credential. A page holds
    /// about `page_size` users (it may hold fewer, or be empty, with more still to come).
    pub async fn reachable_page(
        &self,
        app: &AppId,
        cursor: ReachableCursor,
        page_size: usize,
    ) -> Result<ReachablePage, BankError> {
        let mut conn = self.connection();
        let limit = redis_time(&mut conn).await? + i64::from(self.settings().claim_margin_secs);
        let mut users = Vec::new();
        let mut at = cursor;
        while at.shard < SHARDS && users.len() < page_size {
            let key = self.keys().index_shard(app, at.shard);
            if at.scan == 0 {
                // Lazily forget users whose last credential has expired.
                let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(limit)
                    .query_async(&mut conn)
                    .await?;
            }
            let (next, items): (u64, Vec<(String, f64)>) = redis::cmd("ZSCAN")
                .arg(&key)
                .arg(at.scan)
                .arg("COUNT")
                .arg(page_size.clamp(10, 1000))
                .query_async(&mut conn)
                .await?;
            users.extend(
                items
                    .into_iter()
                    .filter(|(_, score)| *score > limit as f64)
                    .filter_map(|(m, _)| OpenId::new(&m).ok()),
            );
            if next == 0 {
                at = ReachableCursor {
                    shard: at.shard + 1,
                    scan: 0,
                };
            } else {
                at.scan = next;
            }
        }
        Ok(ReachablePage {
            users,
            next: (at.shard < SHARDS).then_some(at),
        })
    }
}
