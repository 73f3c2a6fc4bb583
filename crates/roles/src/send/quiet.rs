//! Quiet hours at the sender (contract 8.5): what a job does when its app's quiet window
//! holds "now", decided before anything is claimed, from the app's window in memory (no
//! Redis call on the path of a job that is sent).
//!
//! - `ignore` (a single message's default): sent as usual;
//! - `skip`: recorded `skipped_quiet_hours` through the campaign marks (counted once, a
//!   receipt if asked), nothing spent or called;
//! - `defer` (a campaign's default): the job is parked in the send queue's delay tiers (the
//!   same queues a paused campaign's jobs wait in), so no sender slot, credential or lease is
//!   held while it waits. It is due at the window's end plus the user's own offset within
//!   `WXPUSH_QUIET_SPREAD_SECS` ([`wxpush_domain::quiet::release_offset`]), kept in the job
//!   (`deferUntil`); it hops through the tiers, each hop the **longest tier not longer than
//!   the time left**, so it never comes back late by more than the shortest tier (1 s), and
//!   once due it goes on like any job, through the fleet-wide rate limiter: released at the
//!   send rate, not all at once. The first time a job is held, `deferred` is counted in the
//!   campaign's counters (one Redis call, on this path only) and in `/metrics`.
//!
//! This module must not claim, call WeChat or touch RabbitMQ: it answers with a
//! [`Disposition`] the caller carries out.

use std::time::Duration;

use wxpush_broker::topology::DELAY_TIERS;
use wxpush_domain::config::MAX_QUIET_SPREAD;
use wxpush_domain::quiet::release_offset;
use wxpush_domain::{AppId, QuietHours, QuietMode, SendJob, ValidJob};

use super::{now_ms, AppFleet, Disposition, SendStats, Sender};
use crate::metrics as m;
use crate::outcomes::Recorded;
use crate::RoleError;

/// What quiet hours make of a job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Not quiet (or the job ignores it): on with the attempt.
    Send,
    /// Quiet, and the job says skip.
    Skip,
    /// Held until this instant (Unix ms); `first` when the job was not held before.
    Defer { until_ms: i64, first: bool },
}

/// The plan for `job` at `now_ms`, its app quiet per `quiet`, deferred jobs released over
/// `spread` after the window's end.
fn plan(now_ms: i64, quiet: Option<&QuietHours>, job: &SendJob, spread: Duration) -> Plan {
    let mode = job.quiet_mode();
    if mode == QuietMode::Ignore {
        return Plan::Send;
    }
    let first = job.defer_until.is_none();
    match quiet.and_then(|q| q.quiet_until_ms(now_ms)) {
        Some(_) if mode == QuietMode::Skip => Plan::Skip,
        Some(end) => {
            let offset = release_offset(&job.open_id, spread);
            let until_ms = end.saturating_add(i64::try_from(offset.as_millis()).unwrap_or(0));
            Plan::Defer { until_ms, first }
        }
        // After the window, within the user's release offset: still held. A `deferUntil`
        // further off than the longest spread is not from a window that just ended (the
        // app's quiet hours changed or went since): the job goes on now.
        None => match job.defer_until {
            Some(until_ms)
                if until_ms > now_ms
                    && until_ms - now_ms <= MAX_SPREAD_MS
                    && mode == QuietMode::Defer =>
            {
                Plan::Defer {
                    until_ms,
                    first: false,
                }
            }
            _ => Plan::Send,
        },
    }
}

/// The longest release spread a job's `deferUntil` may be past a window's end.
const MAX_SPREAD_MS: i64 = MAX_QUIET_SPREAD.as_millis() as i64;

/// The next hop of a job due in `left`: the longest delay tier not longer than it (the
/// shortest tier when less is left), so the job is never held past its time by more than that.
fn hop(left: Duration) -> Duration {
    let secs = DELAY_TIERS
        .iter()
        .copied()
        .filter(|t| Duration::from_secs(u64::from(*t)) <= left)
        .max()
        .unwrap_or(DELAY_TIERS[0]);
    Duration::from_secs(u64::from(secs))
}

impl Sender {
    /// What the app's quiet hours make of this job: `None` to go on with it.
    pub(super) async fn quiet_hours(
        &self,
        app: &AppId,
        fleet: &AppFleet,
        valid: &ValidJob,
    ) -> Result<Option<Disposition>, RoleError> {
        let job = &valid.job;
        let now = now_ms();
        match plan(now, fleet.quiet.as_ref(), job, self.settings.quiet_spread) {
            Plan::Send => Ok(None),
            Plan::Skip => self
                .unsent(app, valid, Recorded::SkippedQuietHours)
                .await
                .map(Some),
            Plan::Defer { until_ms, first } => {
                if first {
                    SendStats::add(&self.stats.deferred_quiet_hours);
                    metrics::counter!(m::JOBS_DEFERRED_QUIET).increment(1);
                    self.bank
                        .campaign_tally(app, &valid.open_id, &job.mark_id(), "deferred")
                        .await?;
                    tracing::info!(until_ms, "send job held for the app's quiet hours");
                }
                let left = Duration::from_millis(u64::try_from(until_ms - now).unwrap_or(0));
                let mut held = job.clone();
                held.defer_until = Some(until_ms);
                Ok(Some(Disposition::Park {
                    job: held,
                    after: hop(left),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxpush_domain::{AppZone, QuietWindow};

    fn job(mode: Option<QuietMode>, single: bool, defer_until: Option<i64>) -> SendJob {
        let mut j: SendJob = serde_json::from_value(serde_json::json!({
            "campaignId": "c1", "openId": "oQuietUser", "templateId": "T"
        }))
        .unwrap();
        j.quiet_hours = mode;
        j.single = single;
        j.defer_until = defer_until;
        j
    }

    fn ms(utc: &str) -> i64 {
        utc.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn hops_are_the_longest_tier_that_is_not_late() {
        let s = Duration::from_secs;
        assert_eq!(hop(Duration::ZERO), s(1));
        assert_eq!(hop(Duration::from_millis(999)), s(1));
        assert_eq!(hop(s(1)), s(1));
        assert_eq!(hop(Duration::from_millis(4_999)), s(2));
        assert_eq!(hop(s(5)), s(5));
        assert_eq!(hop(s(59)), s(15));
        assert_eq!(hop(s(10 * 3600)), s(3600));
        // A night of 10 hours is 10 hops of an hour, then a few shorter ones.
        let mut left = s(10 * 3600 + 37);
        let mut hops = 0;
        while left >= s(1) {
            left -= hop(left);
            hops += 1;
        }
        assert_eq!((hops, left), (14, Duration::ZERO), "3600×10, 15, 15, 5, 2");
    }

    #[test]
    fn each_mode_in_and_out_of_the_window() {
        let q = QuietHours {
            window: QuietWindow::parse("22:00-08:00").unwrap(),
            zone: AppZone::default(),
        };
        let spread = Duration::from_secs(60);
        // 23:00 in Shanghai; the window ends at 00:00 UTC.
        let night = ms("2026-12-06T15:00:00Z");
        let end = ms("2026-12-07T00:00:00Z");
        let day = ms("2026-12-07T04:00:00Z");
        let offset = release_offset("oQuietUser", spread).as_millis() as i64;

        let campaign = job(None, false, None);
        assert_eq!(
            plan(night, Some(&q), &campaign, spread),
            Plan::Defer {
                until_ms: end + offset,
                first: true
            }
        );
        assert_eq!(plan(day, Some(&q), &campaign, spread), Plan::Send);
        assert_eq!(
            plan(night, None, &campaign, spread),
            Plan::Send,
            "no quiet hours"
        );
        let skip = job(Some(QuietMode::Skip), false, None);
        assert_eq!(plan(night, Some(&q), &skip, spread), Plan::Skip);
        assert_eq!(plan(day, Some(&q), &skip, spread), Plan::Send);
        let ignore = job(Some(QuietMode::Ignore), false, None);
        assert_eq!(plan(night, Some(&q), &ignore, spread), Plan::Send);
        // A single message ignores quiet hours unless it says defer.
        assert_eq!(
            plan(night, Some(&q), &job(None, true, None), spread),
            Plan::Send
        );
        assert!(matches!(
            plan(
                night,
                Some(&q),
                &job(Some(QuietMode::Defer), true, None),
                spread
            ),
            Plan::Defer { .. }
        ));

        // Held once: counted once, and still held after the window until its own offset.
        let held = job(None, false, Some(end + offset));
        assert_eq!(
            plan(night, Some(&q), &held, spread),
            Plan::Defer {
                until_ms: end + offset,
                first: false
            }
        );
        assert_eq!(
            plan(end, Some(&q), &held, spread),
            Plan::Defer {
                until_ms: end + offset,
                first: false
            },
            "the window is over, the user's turn is not"
        );
        assert_eq!(plan(end + offset, Some(&q), &held, spread), Plan::Send);
        // Held for a window the app no longer has: not held past the longest spread.
        assert_eq!(plan(night, None, &held, spread), Plan::Send);
        assert_eq!(
            plan(end, None, &held, spread),
            Plan::Defer {
                until_ms: end + offset,
                first: false
            }
        );
        // Released over the first minute: no offset reaches it.
        assert!(offset < 60_000);
    }
}
