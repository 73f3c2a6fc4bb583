//! A campaign stopped by WeChat's refusal of its data (`47003`): every recipient would fail
//! the same way, so the first sender to meet it marks the campaign stopped, and every sender
//! then settles the campaign's jobs as `stopped` without calling WeChat. The same read brings
//! an operator's pause and cancel (contract 8.5, `wxpush campaign pause|resume|cancel`): a
//! paused campaign's jobs are parked, spending nothing; a cancelled one's recipients not yet
//! sent are recorded `cancelled`.
//!
//! A single message (contract 8.2) has no campaign: it is never stopped nor stops anything, and
//! costs no read of a flag.
//!
//! This module owns the sender's reads of the stop flag (cached a second per campaign, read
//! before a job's rate permit and after it) and its one write, both through the
//! campaign record ([`wxpush_bank::record`], which names the fields). It must not decide when
//! a campaign is stopped (the decision table does).

use std::time::{Duration, Instant};

use wxpush_bank::record::Flags;
use wxpush_domain::{AppId, SendJob};

use super::Sender;
use crate::RoleError;

/// How long a sender trusts its last look at a campaign's stop flag.
const STOP_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Sender {
    /// The campaign's flags (stopped by WeChat's 47003, paused or cancelled by an operator),
    /// looked up at most once a second per campaign (one `HMGET`); stopped and cancelled
    /// stay once seen. A single message has none.
    pub(super) async fn campaign_flags(
        &self,
        app: &AppId,
        job: &SendJob,
    ) -> Result<Flags, RoleError> {
        if job.single {
            return Ok(Flags::default());
        }
        let record = self.bank.record(app, &job.campaign_id);
        let key = record.key().to_owned();
        let mut before = Flags::default();
        if let Ok(cache) = self.stopped.lock() {
            if let Some((at, flags)) = cache.get(&key) {
                if flags.stopped || flags.cancelled || at.elapsed() < STOP_CHECK_EVERY {
                    return Ok(*flags);
                }
                before = *flags;
            }
        }
        let flags = record.flags().await?;
        // An operator's action, as this process first sees it: logged and counted once per
        // process (the command that made it logged it too).
        let seen = [
            (!before.paused && flags.paused, "paused"),
            (before.paused && !flags.paused, "resumed"),
            (!before.cancelled && flags.cancelled, "cancelled"),
        ];
        for (_, control) in seen.iter().filter(|(changed, _)| *changed) {
            tracing::info!(campaign = %job.campaign_id, app = %app, control, "campaign control seen");
            metrics::counter!(crate::metrics::CAMPAIGN_CONTROLS_SEEN, "control" => *control)
                .increment(1);
        }
        // Stopped and cancelled stay once seen: a read that began before another one saw them
        // (and ends after it) must not put them back to unset.
        let mut flags = flags;
        if let Ok(mut cache) = self.stopped.lock() {
            if let Some((_, seen)) = cache.get(&key) {
                flags.stopped |= seen.stopped;
                flags.cancelled |= seen.cancelled;
            }
            cache.insert(key, (Instant::now(), flags));
        }
        Ok(flags)
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
            let flags = cache.get(&key).map(|(_, f)| *f).unwrap_or_default();
            cache.insert(
                key,
                (
                    Instant::now(),
                    Flags {
                        stopped: true,
                        ..flags
                    },
                ),
            );
        }
        Ok(())
    }
}
