//! The send role's subscribe-message path: one consent per message, for the job's template.
//!
//! Differences from the template path ([`super`]), and why:
//! - The credential is a consent counted per user and template, claimed through the same
//!   campaign marks (one message per user per campaign, leases) as a formId.
//! - **An ambiguous send is never resent.** A formId that WeChat already took answers `41029`
//!   on a second try, so a template retry after a timeout is safe and tells what happened. A
//!   subscribe send has no such witness: resending after a timeout could deliver twice. It is
//!   recorded as `unknown`, and so is a job that finds a lease left in doubt by a crash.
//! - `43101` (no consent left at WeChat) clears the user's consents for the template.
//! - `47003` (the data breaks WeChat's limits) would fail every recipient the same way: the
//!   campaign is stopped, and the jobs still queued are acknowledged without a send.
//!
//! This module must not parse jobs or talk to RabbitMQ (the caller settles the delivery).

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use wxpush_bank::Settle;
use wxpush_domain::{AppId, ValidJob};
use wxpush_wechat::{Outcome, SubscribeMessage};

use super::{AppFleet, Claimed, Disposition, Sender, CAMPAIGN_LEASE};
use crate::outcomes::Recorded;
use crate::RoleError;

/// How long a sender trusts its last look at a campaign's stop flag.
const STOP_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Sender {
    /// Claims (or resumes) the user's consent for the job's template, sends, and classifies.
    pub(super) async fn process_subscribe(
        &self,
        valid: &ValidJob,
        app: &AppId,
        fleet: &AppFleet,
        owner: &str,
    ) -> Result<Disposition, RoleError> {
        let job = &valid.job;
        let campaign = job.campaign_id.as_str();
        let template = job.template_id.as_str();
        if self.campaign_stopped(app, campaign).await? {
            return Ok(Disposition::Done(Recorded::Stopped));
        }
        let claim = self
            .bank
            .campaign_claim_consent(
                app,
                &valid.open_id,
                campaign,
                template,
                owner,
                CAMPAIGN_LEASE,
            )
            .await?;
        match super::claimed(claim, job) {
            Claimed::Ends(done) => return Ok(*done),
            Claimed::Holds(_, true) => {
                // An earlier attempt may have delivered it: never send a second time.
                self.settle(valid, owner, Settle::Final("unknown")).await?;
                return Ok(Disposition::Done(Recorded::Unknown));
            }
            Claimed::Holds(_, false) => {}
        }
        let message = SubscribeMessage {
            touser: valid.open_id.clone(),
            template_id: job.template_id.clone(),
            page: job.page.clone(),
            data: wrap_values(&job.data),
            miniprogram_state: job
                .miniprogram_state
                .as_deref()
                .and_then(|s| s.parse().ok()),
            lang: job.lang.as_deref().and_then(|s| s.parse().ok()),
        };
        let mut quick = self.quick_retries();
        let mut token_refreshed = false;
        let release = |retry| Settle::Release {
            in_doubt: false,
            retry,
        };
        loop {
            fleet.limiter.acquire().await?;
            if self.campaign_stopped(app, campaign).await? {
                // Stopped while this job waited for its permit: the consent goes back.
                self.settle(valid, owner, release(false)).await?;
                return Ok(Disposition::Done(Recorded::Stopped));
            }
            let token = match fleet.tokens.get().await {
                Ok(t) => t,
                Err(e) => {
                    self.settle(valid, owner, release(true)).await?;
                    return Ok(self.retry_later(valid, format!("no access token: {e}")));
                }
            };
            let send = self.parts.wechat.send_subscribe(token.expose(), &message);
            let outcome = self.call_wechat("subscribe", app, send).await;
            // 47003 stops the whole campaign (below), with WeChat's words as the reason.
            let data_refused = match &outcome {
                Outcome::Permanent {
                    code: 47003,
                    errmsg,
                } => Some(format!("47003: {errmsg}")),
                _ => None,
            };
            match outcome {
                Outcome::Sent { .. } => {
                    self.settle(valid, owner, Settle::Final("sent")).await?;
                    return Ok(Disposition::Done(Recorded::Sent));
                }
                Outcome::Transient {
                    ambiguous: true, ..
                } => {
                    self.settle(valid, owner, Settle::Final("unknown")).await?;
                    return Ok(Disposition::Done(Recorded::Unknown));
                }
                Outcome::Transient { reason, .. } => {
                    if let Some(wait) = quick.next() {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    self.settle(valid, owner, release(true)).await?;
                    return Ok(self.retry_later(valid, reason));
                }
                Outcome::BadToken { .. } if !token_refreshed => {
                    if let Err(e) = fleet.tokens.invalidate(&token).await {
                        tracing::warn!(error = %e, "could not invalidate the access token");
                    }
                    token_refreshed = true;
                }
                Outcome::BadToken { code } => {
                    self.settle(valid, owner, release(true)).await?;
                    let reason = format!("access token refused twice ({code})");
                    return Ok(self.retry_later(valid, reason));
                }
                Outcome::MinuteQuota => {
                    self.settle(valid, owner, release(false)).await?;
                    return Ok(Disposition::Park {
                        job: job.clone(),
                        after: super::until_next_minute(),
                    });
                }
                Outcome::QuotaExhausted => {
                    tracing::warn!(cooldown = ?self.settings.quota_cooldown, "WeChat daily quota reached (45009): pausing the fleet");
                    fleet.pause.pause_for(self.settings.quota_cooldown).await?;
                    self.settle(valid, owner, release(false)).await?;
                    return Ok(Disposition::Park {
                        job: job.clone(),
                        after: self.settings.quota_cooldown,
                    });
                }
                Outcome::NoConsent => {
                    // WeChat holds no consent for this user and template: ours are stale.
                    let outcome = Recorded::Failed(43101);
                    self.settle(valid, owner, Settle::Final(&outcome.field()))
                        .await?;
                    self.bank
                        .clear_consents(app, &valid.open_id, template)
                        .await?;
                    return Ok(Disposition::Done(outcome));
                }
                // BadCredential is not an answer a subscribe send gets; treated as permanent.
                Outcome::Permanent { code, .. } | Outcome::BadCredential { code } => {
                    let outcome = Recorded::Failed(code);
                    self.settle(valid, owner, Settle::Final(&outcome.field()))
                        .await?;
                    // WeChat did not use the consent: it goes back to the user, unless
                    // they already hold the most the bank keeps.
                    let back = self
                        .bank
                        .release_consent(app, &valid.open_id, template)
                        .await?;
                    if !back {
                        tracing::debug!(
                            "the unused consent was not given back: the user holds the most \
                             the bank keeps (WXPUSH_CONSENTS_PER_TEMPLATE, WXPUSH_TEMPLATES_PER_USER)"
                        );
                    }
                    if let Some(reason) = &data_refused {
                        self.stop_campaign(app, campaign, reason).await?;
                    }
                    return Ok(Disposition::Done(outcome));
                }
            }
        }
    }

    /// The next attempt of a failed job (its consent was released), or giving up.
    fn retry_later(&self, valid: &ValidJob, reason: String) -> Disposition {
        let job = &valid.job;
        if job.attempt + 1 < self.settings.max_attempts {
            Disposition::Retry {
                job: job.clone(),
                after: super::backoff(job.attempt),
                reason,
            }
        } else {
            Disposition::GiveUp {
                reason: format!("gave up after {} attempts: {reason}", job.attempt + 1),
            }
        }
    }

    /// True when the campaign was stopped (by any sender), looked up at most once a second
    /// per campaign.
    async fn campaign_stopped(&self, app: &AppId, campaign: &str) -> Result<bool, RoleError> {
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

    /// Marks the campaign stopped (once) with the reason, for every sender and the status.
    async fn stop_campaign(
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

/// The job's field → value as WeChat's `{"field": {"value": v}}`.
fn wrap_values(
    data: &std::collections::BTreeMap<String, wxpush_domain::DataItem>,
) -> Map<String, Value> {
    data.iter()
        .map(|(k, v)| (k.clone(), json!({ "value": v.value })))
        .collect()
}
