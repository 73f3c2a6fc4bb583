//! A campaign stopped by WeChat's refusal of its data (`47003`): every recipient would fail
//! the same way, so the first sender to meet it marks the campaign stopped, and every sender
//! then settles the campaign's jobs as `stopped` without calling WeChat.
//!
//! A single message (contract 8.2) has no campaign: it is never stopped nor stops anything, and
//! costs no read of a flag.
//!
//! This module owns the sender's reads of the stop flag (cached a second per campaign; between
//! a rate permit and its call only the cache is read) and its one write, both through the
//! campaign record ([`wxpush_bank::record`], which names the fields). It must not decide when
//! a campaign is stopped (the decision table does).

use std::time::{Duration, Instant};

use wxpush_domain::{AppId, SendJob};

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
        job: &SendJob,
    ) -> Result<bool, RoleError> {
        if job.single {
            return Ok(false);
        }
        let campaign = &job.campaign_id;
        let record = self.bank.record(app, campaign);
        let key = record.key().to_owned();
        if let Ok(cache) = self.stopped.lock() {
            if let Some((at, stopped)) = cache.get(&key) {
                if *stopped || at.elapsed() < STOP_CHECK_EVERY {
                    return Ok(*stopped);
                }
            }
        }
        let stopped = record.stopped().await?;
        if let Ok(mut cache) = self.stopped.lock() {
            cache.insert(key, (Instant::now(), stopped));
        }
        Ok(stopped)
    }

    /// What this process last saw of the campaign's stop flag, without asking Redis (for the
    /// moment between a rate permit and its call, where nothing but the claim may stand).
    pub(super) fn campaign_stop_seen(&self, app: &AppId, job: &SendJob) -> bool {
        if job.single {
            return false;
        }
        let campaign = &job.campaign_id;
        let key = self.bank.record(app, campaign).key().to_owned();
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
        job: &SendJob,
        reason: &str,
    ) -> Result<(), RoleError> {
        if job.single {
            // A single message's data concerns it alone: its outcome (failed:47003) is all.
            return Ok(());
        }
        let campaign = job.campaign_id.as_str();
        let record = self.bank.record(app, campaign);
        let key = record.key().to_owned();
        // The time and the reason in one step, once (the first sender's reason is kept).
        let first = record.stop(reason).await?;
        if first {
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
