//! A campaign stopped by WeChat's refusal of its data (`47003`): every recipient would fail
//! the same way, so the first sender to meet it marks the campaign stopped, and every sender
//! then settles the campaign's jobs as `stopped` without calling WeChat.
//!
//! This module owns the stop flag's reads (cached a second per campaign; between a rate permit
//! and its call only the cache is read) and its one write.
//! It must not decide when a campaign is stopped (the decision table does).

use std::time::{Duration, Instant};

use wxpush_domain::AppId;

use super::Sender;
use crate::RoleError;

/// How long a sender trusts its last look at a campaign's stop flag.
const STOP_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Sender {
    /// True when the campaign was stopped (by any sender), looked up at most once a second
    /// per campaign.
    pub(super) async fn campaign_stopped(
        &self,
        app: &AppId,
        campaign: &str,
    ) -> Result<bool, RoleError> {
        let key = crate::dispatch::record_key(self.bank.keys().namespace(), app, campaign);
        if let Ok(cache) = self.stopped.lock() {
            if let Some((at, stopped)) = cache.get(&key) {
                if *stopped || at.elapsed() < STOP_CHECK_EVERY {
                    return Ok(*stopped);
                }
            }
        }
        let stopped: bool = redis::cmd("HEXISTS")
            .arg(&key)
            .arg("stopped_at_ms")
            .query_async(&mut self.bank.connection())
            .await?;
        if let Ok(mut cache) = self.stopped.lock() {
            cache.insert(key, (Instant::now(), stopped));
        }
        Ok(stopped)
    }

    /// What this process last saw of the campaign's stop flag, without asking Redis (for the
    /// moment between a rate permit and its call, where nothing but the claim may stand).
    pub(super) fn campaign_stop_seen(&self, app: &AppId, campaign: &str) -> bool {
        let key = crate::dispatch::record_key(self.bank.keys().namespace(), app, campaign);
        self.stopped
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).map(|(_, stopped)| *stopped))
            .unwrap_or(false)
    }

    /// Marks the campaign stopped (once) with the reason, for every sender and the status.
    pub(super) async fn stop_campaign(
        &self,
        app: &AppId,
        campaign: &str,
        reason: &str,
    ) -> Result<(), RoleError> {
        let key = crate::dispatch::record_key(self.bank.keys().namespace(), app, campaign);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let first: bool = redis::cmd("HSETNX")
            .arg(&key)
            .arg("stopped_at_ms")
            .arg(now)
            .query_async(&mut self.bank.connection())
            .await?;
        if first {
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("stopped_reason")
                .arg(reason)
                .query_async(&mut self.bank.connection())
                .await?;
            tracing::warn!(
                campaign,
                reason,
                "WeChat refused the campaign's data: campaign stopped"
            );
        }
        if let Ok(mut cache) = self.stopped.lock() {
            cache.insert(key, (Instant::now(), true));
        }
        Ok(())
    }
}
