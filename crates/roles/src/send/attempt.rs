//! The one loop that performs the decision table ([`super::decide`]) for one job: template
//! and subscribe jobs alike, which differ only in how they claim a credential and build the
//! message.
//!
//! Each turn of the loop, in this order:
//! 1. the app's access token, then a rate permit: both in hand *before* the lease is taken,
//!    so neither wait (a slow token endpoint, a low rate) eats into the lease, and the permit
//!    last, so no permit waits on a token (permits collected during a token wait would all
//!    be spent at once when it ends, past the rate). A campaign stopped meanwhile is not sent
//!    to. Between the permit and the call there is only the claim's round trip;
//! 2. the claim, under a lease whose owner is this attempt's fencing token (a new
//!    credential, the one held, the same one renewed for another call, or the next one);
//! 3. the fence on time: the call must end within the lease and keep the fleet's rate bound,
//!    so it is made only if it can (started within `lease − WeChat's request timeout − a
//!    margin` of the claim, with the permit still fresh: [`wxpush_fleet::Permit::is_fresh`]);
//!    otherwise the lease is released and the turn starts again with a new permit (a stale
//!    one is never used);
//! 4. the call, and the table's step for WeChat's answer.
//!
//! Every step after the claim names the fencing token, and Redis refuses it once another
//! attempt has taken the lease over (a process stalled past its lease, say): such an attempt
//! then stops where it is, calls nothing more, settles and gives back nothing, and its job is
//! acknowledged (the attempt that took over holds its own copy).
//!
//! This module must not decide what an answer means (the table does) nor touch RabbitMQ (the
//! caller settles the delivery from the [`Disposition`]).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use wxpush_bank::{CampaignClaim, ClaimExtras, ClaimMode, Marked, Receipt, Settle};
use wxpush_broker::topology::DELAY_TIERS;
use wxpush_domain::{AppId, Credential, JobKind, ValidJob};
use wxpush_fleet::Token;
use wxpush_wechat::{Outcome, SubscribeMessage, TemplateMessage};

use super::decide::{self, After, Resume, Spend, State, Step, Until};
use super::{AppFleet, Disposition, SendStats, Sender};
use crate::metrics as m;
use crate::outcomes::Recorded;
use crate::RoleError;

/// How long one attempt holds a user's campaign credential before another may take over.
pub(super) const CAMPAIGN_LEASE: Duration = Duration::from_secs(20);

/// Room left in the lease after a call's own timeout: the call starts no later than
/// `CAMPAIGN_LEASE − request timeout − CALL_MARGIN` after its claim was sent.
const CALL_MARGIN: Duration = Duration::from_secs(2);

/// How long a job waits before looking again at a lease another attempt holds.
const BUSY_RECHECK: Duration = Duration::from_secs(5);

/// How long a job waits (the app's sends pause that long, fleet-wide) when WeChat refuses a
/// token right after its refresh, or when the token cannot be had for another reason than the
/// endpoint's (Redis, another process's refresh taking too long).
const TOKEN_WAIT: Duration = Duration::from_secs(15);

/// The shortest fleet pause after the token endpoint failed (it may be remembered for less).
const TOKEN_MIN_PAUSE: Duration = Duration::from_secs(1);

/// How many permits an attempt leaves unused because its token was refused meanwhile.
const MAX_TOKEN_SKIPS: u32 = 3;

/// How long a paused campaign's job parks before it looks again (a delay tier): resumed, its
/// jobs go on within this.
const CAMPAIGN_PAUSE_RECHECK: Duration = Duration::from_secs(5);

/// How many times in a row the fence may send an attempt back to its claim (a stalled
/// process, a slow Redis) before the job is parked for a moment instead.
const MAX_FENCE_TURNS: u32 = 5;

impl Sender {
    /// Claims, calls and settles until the job is done or must wait.
    pub(super) async fn process(&self, valid: &ValidJob) -> Result<Disposition, RoleError> {
        let Some((app, fleet)) = self.parts.resolve(valid.app_id.as_ref()) else {
            return Ok(Disposition::Refuse {
                code: "unknown_app",
                reason: format!(
                    "appId {} is not configured in this sender",
                    valid.app_id.as_ref().map_or("", AppId::as_str)
                ),
            });
        };
        let job = &valid.job;
        let flags = self.campaign_flags(app, job).await?;
        if flags.stopped {
            return Ok(Disposition::Done(Recorded::Stopped));
        }
        // Cancelled: recorded `cancelled` at once, unless an earlier attempt's lease ran out on
        // the recipient (it died holding a credential): then this one resumes that credential
        // below and cancels with it (or, in doubt, goes on).
        let mut resume_unsent = Unsent::No;
        if flags.cancelled {
            match self.unsent(app, valid, Recorded::Cancelled).await? {
                Disposition::Superseded => resume_unsent = Unsent::Cancelled,
                d => return Ok(d),
            }
        }
        if flags.paused {
            metrics::counter!(m::JOBS_PARKED_PAUSED).increment(1);
            return Ok(Disposition::Park {
                job: job.clone(),
                after: CAMPAIGN_PAUSE_RECHECK,
            });
        }
        if job.kind == JobKind::Invalid {
            return self.unsent(app, valid, Recorded::InvalidData).await;
        }
        // Quiet hours: decided in memory, before anything is claimed (and again after the
        // rate permit, below). A skip that finds an earlier attempt's lease on the recipient
        // resumes it to give its credential back, as a cancel does.
        match self.quiet_hours(app, fleet, valid).await? {
            None => {}
            Some(Disposition::Superseded) if resume_unsent == Unsent::No => {
                resume_unsent = Unsent::SkippedQuietHours;
            }
            Some(Disposition::Superseded) => {}
            Some(d) => return Ok(d),
        }
        if let Some(wait) = fleet.pause.paused_for().await {
            return Ok(Disposition::Park {
                job: job.clone(),
                after: until_pause_ends(wait),
            });
        }
        let mut a = Attempt {
            valid,
            app,
            receipt: crate::receipts::fields(job, app, &valid.open_id),
            msgid: None,
            reused: AtomicBool::new(false),
            cap: fleet.cap.for_message(job.single),
            unsent: AtomicU8::new(resume_unsent as u8),
            owner: super::attempt_owner(),
            state: State::new(self.settings.quick_retries),
            quick: Box::new(self.quick_retries()),
        };
        let mut mode = ClaimMode::Take;
        let mut fence_turns = 0;
        let mut token_skips = 0;
        loop {
            // 1. The token, then the permit.
            let token = match fleet.tokens.get().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "no access token: the job waits");
                    // Refused or failing (remembered fleet-wide for `retry_in`, longer each
                    // time in a row): the app's sends pause that long, fleet-wide, so no job
                    // asks again sooner and none spends an attempt or its retry budget.
                    let after = match e.retry_in() {
                        Some(wait) => {
                            let left = fleet.pause.pause_for(wait.max(TOKEN_MIN_PAUSE)).await?;
                            until_pause_ends(left)
                        }
                        None => TOKEN_WAIT,
                    };
                    return self.park(&a, mode != ClaimMode::Take, after).await;
                }
            };
            // Stopped (47003), paused or cancelled meanwhile: no call, and what it holds goes
            // back. Looked up before the permit and again after it (a Redis read at most once
            // a second per campaign and process, the cache's age): a job that waited for its
            // permit longer than that reads what an operator did meanwhile, so a pause or a
            // cancel holds every job in hand within a second, not only jobs to come.
            let flags = self.campaign_flags(app, job).await?;
            if let Some(d) = self.obey(&a, mode, flags).await? {
                return Ok(d);
            }
            let permit = fleet.limiter.acquire().await?;
            let flags = self.campaign_flags(app, job).await?;
            if let Some(d) = self.obey(&a, mode, flags).await? {
                return Ok(d);
            }
            // A quiet window that began while the job waited for its permit (in memory; a
            // new attempt only: one under way with its credential finishes its quick resends).
            if mode == ClaimMode::Take && a.unsent() == Unsent::No {
                match self.quiet_hours(app, fleet, valid).await? {
                    None => {}
                    Some(Disposition::Superseded) => a.resume_unsent(Unsent::SkippedQuietHours),
                    Some(d) => return Ok(d),
                }
            }
            // WeChat refused this token to another job while this one waited for its permit
            // (a revoked token, say): the permit goes unused rather than on a call bound to
            // answer 40001, and the turn starts again with the next token (a few times at
            // most: a token this process never cached is then used as it is).
            if token_skips < MAX_TOKEN_SKIPS && !fleet.tokens.still_current(&token) {
                token_skips += 1;
                continue;
            }
            // 2. The claim, under this attempt's lease.
            let claimed_at = Instant::now();
            let credential = match self.claim(&a, mode).await? {
                CampaignClaim::Done(outcome) => {
                    return Ok(Disposition::Done(Recorded::Duplicate(outcome)))
                }
                CampaignClaim::Busy(left) => {
                    return Ok(Disposition::Park {
                        job: job.clone(),
                        after: left.clamp(Duration::from_secs(1), BUSY_RECHECK),
                    })
                }
                CampaignClaim::Superseded if a.reused.load(Ordering::Relaxed) => {
                    // At most one WeChat message per messageId and app: the id is bound to
                    // its first user, and the same id for another is refused, nothing sent.
                    return Ok(Disposition::Refuse {
                        code: "message_id_reused",
                        reason: format!(
                            "messageId {} was sent to another user of app {app}",
                            job.campaign_id
                        ),
                    });
                }
                CampaignClaim::Superseded => return Ok(Disposition::Superseded),
                CampaignClaim::NoCredential => {
                    return Ok(Disposition::Done(Recorded::NoCredential))
                }
                CampaignClaim::Capped => return Ok(Disposition::Done(Recorded::Capped)),
                CampaignClaim::Fresh(_) if a.unsent() != Unsent::No => {
                    return self.finish(&a, a.unsent().outcome(), After::GiveBack).await;
                }
                CampaignClaim::Fresh(c) => {
                    a.state.in_doubt = false;
                    c
                }
                CampaignClaim::Held { in_doubt, .. } if a.unsent() != Unsent::No && !in_doubt => {
                    return self.finish(&a, a.unsent().outcome(), After::GiveBack).await;
                }
                CampaignClaim::Held {
                    credential,
                    in_doubt,
                    expired,
                    ..
                } => {
                    // Resumed by this attempt (a renewal), what it knows stands; else the
                    // marks tell what an earlier attempt left.
                    let in_doubt = if mode == ClaimMode::Take {
                        in_doubt
                    } else {
                        a.state.in_doubt
                    };
                    match decide::on_held(Spend::of(&credential), in_doubt, expired) {
                        Resume::Send => {
                            a.state.in_doubt = in_doubt;
                            credential
                        }
                        Resume::Finish(outcome) => {
                            return self.finish(&a, outcome, After::Nothing).await;
                        }
                        Resume::Next => {
                            a.state.in_doubt = false;
                            mode = ClaimMode::Next;
                            continue;
                        }
                    }
                }
            };
            let spend = Spend::of(&credential);
            // 3. The fence on time: the call must end within the lease.
            if claimed_at.elapsed() > self.call_deadline() || !permit.is_fresh() {
                fence_turns += 1;
                metrics::counter!(m::SEND_FENCED).increment(1);
                tracing::debug!(
                    waited_ms = claimed_at.elapsed().as_millis() as u64,
                    "too long since the claim (or the permit): not calling with this lease"
                );
                if !self.release(&a).await? {
                    return Ok(Disposition::Superseded);
                }
                if fence_turns >= MAX_FENCE_TURNS {
                    return Ok(Disposition::Park {
                        job: job.clone(),
                        after: Duration::from_secs(1),
                    });
                }
                mode = ClaimMode::Renew;
                continue;
            }
            // 4. The call, and what its answer means.
            let outcome = self.call(&a, &token, &credential).await;
            if let Outcome::Sent { msgid } = &outcome {
                a.msgid = *msgid;
            }
            match decide::decide(spend, &outcome, &a.state) {
                Step::Finish(outcome, after) => return self.finish(&a, outcome, after).await,
                Step::Resend { in_doubt } => {
                    a.state.in_doubt = in_doubt;
                    a.state.quick_left = a.state.quick_left.saturating_sub(1);
                    if let Some(wait) = a.quick.next() {
                        tokio::time::sleep(wait).await;
                    }
                    mode = ClaimMode::Renew;
                }
                Step::Next => {
                    SendStats::add(&self.stats.credentials_dropped);
                    a.state.refused += 1;
                    a.state.in_doubt = false;
                    mode = ClaimMode::Next;
                }
                Step::NewToken => {
                    if let Err(e) = fleet.tokens.invalidate(&token).await {
                        tracing::warn!(error = %e, "could not invalidate the access token");
                    }
                    a.state.token_refreshed = true;
                    mode = ClaimMode::Renew;
                }
                Step::Later { in_doubt, reason } => {
                    return self.later(&a, spend, in_doubt, reason).await;
                }
                Step::Wait { until, in_doubt } => {
                    a.state.in_doubt = in_doubt;
                    return self.wait(&a, true, until, fleet).await;
                }
            }
        }
    }

    /// What a flag seen inside the attempt's loop means: stopped (47003), what it holds goes
    /// back and the recipient is `stopped`; paused, what it holds goes back (its doubt kept)
    /// and the job parks; cancelled, before any call the recipient is `cancelled` (a credential
    /// held goes back), after a call that may have delivered the attempt goes on (it may have
    /// been sent: not this cancel's to undo). `None`: go on.
    async fn obey(
        &self,
        a: &Attempt<'_>,
        mode: ClaimMode,
        flags: wxpush_bank::record::Flags,
    ) -> Result<Option<Disposition>, RoleError> {
        if flags.stopped {
            return self.stopped(a, mode).await.map(Some);
        }
        if flags.paused {
            metrics::counter!(m::JOBS_PARKED_PAUSED).increment(1);
            if mode != ClaimMode::Take && !self.release(a).await? {
                return Ok(Some(Disposition::Superseded));
            }
            return Ok(Some(Disposition::Park {
                job: a.valid.job.clone(),
                after: CAMPAIGN_PAUSE_RECHECK,
            }));
        }
        if flags.cancelled && a.unsent() != Unsent::Cancelled {
            if mode == ClaimMode::Take {
                // An earlier attempt's lease on the recipient ran out: this one resumes it to
                // give its credential back and record `cancelled` (or, in doubt, goes on).
                return match self.unsent(a.app, a.valid, Recorded::Cancelled).await? {
                    Disposition::Superseded => {
                        a.resume_unsent(Unsent::Cancelled);
                        Ok(None)
                    }
                    d => Ok(Some(d)),
                };
            }
            if !a.state.in_doubt {
                return self
                    .finish(a, Recorded::Cancelled, After::GiveBack)
                    .await
                    .map(Some);
            }
        }
        Ok(None)
    }

    /// A recipient recorded without a claim or a call: `invalid_data` (the dispatcher refused
    /// their own data) or `cancelled` (an operator cancelled the campaign), settled and counted
    /// once like every outcome, with its receipt.
    pub(super) async fn unsent(
        &self,
        app: &AppId,
        valid: &ValidJob,
        outcome: Recorded,
    ) -> Result<Disposition, RoleError> {
        let job = &valid.job;
        let fields = crate::receipts::fields(job, app, &valid.open_id);
        let receipt = fields.as_deref().map(|fields| Receipt {
            fields,
            msgid: None,
        });
        let marked = self
            .bank
            .campaign_outcome(
                app,
                &valid.open_id,
                &job.mark_id(),
                &outcome.field(),
                receipt,
            )
            .await?;
        Ok(match marked {
            Marked::Recorded => {
                if let Some(reason) = job.invalid.as_deref() {
                    tracing::info!(reason = %wxpush_domain::short_reason(reason), "recipient's data refused at dispatch");
                }
                Disposition::Done(outcome)
            }
            Marked::Done(earlier) => Disposition::Done(Recorded::Duplicate(earlier)),
            Marked::Busy(left) => Disposition::Park {
                job: job.clone(),
                after: left.clamp(Duration::from_secs(1), BUSY_RECHECK),
            },
            Marked::Superseded => Disposition::Superseded,
        })
    }

    /// The campaign was stopped (47003) before this attempt's call: what it holds (after a
    /// first turn) goes back, and the recipient is settled `stopped`.
    async fn stopped(&self, a: &Attempt<'_>, mode: ClaimMode) -> Result<Disposition, RoleError> {
        if mode != ClaimMode::Take && !self.release(a).await? {
            return Ok(Disposition::Superseded);
        }
        Ok(Disposition::Done(Recorded::Stopped))
    }

    /// Settles the recipient of a job that is being dead-lettered unread for coming back too
    /// often (a crash or a recurring error each time it was handled), as a spent retry budget
    /// would ([`decide::give_up`]): `dead_lettered` and listed for `campaign retry`, the
    /// credential given back, or `sent_unconfirmed` / `unknown` if a call with the credential
    /// it held may have delivered. No call is made. A lease another attempt holds, or a
    /// recipient already settled, is left alone. Returns the outcome recorded, if any.
    pub(super) async fn abandon(&self, valid: &ValidJob) -> Result<Option<Recorded>, RoleError> {
        let Some((app, _)) = self.parts.resolve(valid.app_id.as_ref()) else {
            return Ok(None);
        };
        if valid.job.kind == JobKind::Invalid {
            return match self.unsent(app, valid, Recorded::InvalidData).await? {
                Disposition::Done(outcome) => Ok(Some(outcome)),
                _ => Ok(None),
            };
        }
        let a = Attempt {
            valid,
            app,
            receipt: crate::receipts::fields(&valid.job, app, &valid.open_id),
            msgid: None,
            reused: AtomicBool::new(false),
            cap: None,
            unsent: AtomicU8::new(Unsent::No as u8),
            owner: super::attempt_owner(),
            state: State::new(0),
            quick: Box::new(std::iter::empty()),
        };
        let (spend, in_doubt) = match self.claim(&a, ClaimMode::Take).await? {
            CampaignClaim::Fresh(c) => (Spend::of(&c), false),
            CampaignClaim::Held {
                credential,
                in_doubt,
                ..
            } => (Spend::of(&credential), in_doubt),
            CampaignClaim::NoCredential => return Ok(Some(Recorded::NoCredential)),
            CampaignClaim::Capped => return Ok(Some(Recorded::Capped)),
            CampaignClaim::Done(_) | CampaignClaim::Busy(_) | CampaignClaim::Superseded => {
                return Ok(None)
            }
        };
        let (outcome, after) = decide::give_up(spend, in_doubt);
        match self.finish(&a, outcome, after).await? {
            Disposition::Done(outcome) => Ok(Some(outcome)),
            _ => Ok(None),
        }
    }

    /// The latest a call may start after its claim was sent: the call (WeChat's request
    /// timeout at most) then ends within the lease, with a margin.
    fn call_deadline(&self) -> Duration {
        CAMPAIGN_LEASE
            .saturating_sub(self.parts.wechat.request_timeout())
            .saturating_sub(CALL_MARGIN)
    }

    /// The claim of the job's kind: a formId or prepayId use, or a consent for its template.
    ///
    /// A claim the replicas asked for did not acknowledge (`WXPUSH_REDIS_WAIT_REPLICAS`) was
    /// applied all the same: whatever lease it took is released at once, no call made (the
    /// doubt stays as this attempt knows it), and the error hands the job back.
    async fn claim(&self, a: &Attempt<'_>, mode: ClaimMode) -> Result<CampaignClaim, RoleError> {
        match self.claim_once(a, mode).await {
            Err(RoleError::Bank(wxpush_bank::BankError::NotReplicated(short))) => {
                // Fenced: a no-op unless the claim took the lease. Its own WAIT falls short
                // too, most likely; the release stands on the primary all the same.
                let _ = self.release(a).await;
                Err(RoleError::Bank(short.into()))
            }
            other => other,
        }
    }

    async fn claim_once(
        &self,
        a: &Attempt<'_>,
        mode: ClaimMode,
    ) -> Result<CampaignClaim, RoleError> {
        let job = &a.valid.job;
        // A single message's first claim binds its id to its user in the same round trip.
        let bind = (job.single && mode == ClaimMode::Take).then_some(job.campaign_id.as_str());
        let (claim, bound) = match job.kind {
            JobKind::Template => {
                self.bank
                    .campaign_claim_with(
                        a.app,
                        &a.valid.open_id,
                        &job.mark_id(),
                        &a.owner,
                        CAMPAIGN_LEASE,
                        mode,
                        ClaimExtras {
                            receipt: a.receipt(),
                            bind,
                            cap: a.cap,
                        },
                    )
                    .await?
            }
            JobKind::Subscribe => {
                self.bank
                    .campaign_claim_consent_with(
                        a.app,
                        &a.valid.open_id,
                        &job.mark_id(),
                        &job.template_id,
                        &a.owner,
                        CAMPAIGN_LEASE,
                        mode,
                        ClaimExtras {
                            receipt: a.receipt(),
                            bind,
                            cap: a.cap,
                        },
                    )
                    .await?
            }
            // Never reached: process() and abandon() record an invalid job without a claim.
            JobKind::Invalid => (CampaignClaim::Superseded, None),
        };
        if bound.is_some_and(|b| b != a.valid.open_id.as_str()) {
            // The id is another user's: what this claim took goes back, settled without a
            // receipt (the message was not this user's to have), and the attempt stops.
            if matches!(claim, CampaignClaim::Fresh(_) | CampaignClaim::Held { .. }) {
                let reused = Settle::Final {
                    outcome: "message_id_reused",
                    give_back: true,
                };
                self.bank
                    .campaign_settle_with(
                        a.app,
                        &a.valid.open_id,
                        &job.mark_id(),
                        &job.template_id,
                        &a.owner,
                        reused,
                        None,
                    )
                    .await?;
            }
            a.reused.store(true, Ordering::Relaxed);
            return Ok(CampaignClaim::Superseded);
        }
        metrics::counter!(m::CLAIMS, "result" => claim_result(&claim)).increment(1);
        if matches!(
            claim,
            CampaignClaim::Held {
                taken_over: true,
                ..
            }
        ) {
            tracing::info!("took over a lease another attempt let run out (a sender stalled or died while holding it)");
        }
        Ok(claim)
    }

    /// One send call with `credential`, built for the job's kind.
    async fn call(&self, a: &Attempt<'_>, token: &Token, credential: &Credential) -> Outcome {
        let job = &a.valid.job;
        match job.kind {
            JobKind::Template => {
                let message = TemplateMessage {
                    touser: a.valid.open_id.clone(),
                    template_id: job.template_id.clone(),
                    page: job.page.clone(),
                    form_id: credential.value.clone(),
                    data: job.data.clone(),
                    emphasis_keyword: job.emphasis_keyword.clone(),
                };
                let send = self.parts.wechat.send_template(token.expose(), &message);
                self.call_wechat("template", a.app, send).await
            }
            JobKind::Subscribe => {
                let message = SubscribeMessage {
                    touser: a.valid.open_id.clone(),
                    template_id: job.template_id.clone(),
                    page: job.page.clone(),
                    data: wrap_values(&job.data),
                    miniprogram_state: job
                        .miniprogram_state
                        .as_deref()
                        .and_then(|s| s.parse().ok()),
                    lang: job.lang.as_deref().and_then(|s| s.parse().ok()),
                };
                let send = self.parts.wechat.send_subscribe(token.expose(), &message);
                self.call_wechat("subscribe", a.app, send).await
            }
            // Never reached (an invalid job claims nothing, so it gets no credential to call
            // with); if it were, nothing is sent and nothing may have been.
            JobKind::Invalid => Outcome::Transient {
                code: None,
                reason: "a job whose data was refused is never sent".into(),
            },
        }
    }

    /// Settles the recipient, then does what else the table said (only if the settle was
    /// this attempt's to make).
    async fn finish(
        &self,
        a: &Attempt<'_>,
        outcome: Recorded,
        after: After,
    ) -> Result<Disposition, RoleError> {
        let field = outcome.field();
        let settle = Settle::Final {
            outcome: &field,
            give_back: after.gives_back(),
        };
        if !self.settle(a, settle).await? {
            return Ok(Disposition::Superseded);
        }
        let job = &a.valid.job;
        match after {
            After::Nothing => {}
            After::GiveBack => SendStats::add(&self.stats.credentials_released),
            After::ClearConsents => {
                self.bank
                    .clear_consents(a.app, &a.valid.open_id, &job.template_id)
                    .await?;
            }
            After::StopCampaign(reason) => {
                self.stop_campaign(a.app, job, &reason).await?;
            }
            After::GiveBackAndStop(reason) => {
                SendStats::add(&self.stats.credentials_released);
                self.stop_campaign(a.app, job, &reason).await?;
            }
        }
        Ok(Disposition::Done(outcome))
    }

    /// An attempt that failed for now: another one later, within the retry budget, or, once
    /// it is spent, the recipient settled as the table's `give_up` says.
    async fn later(
        &self,
        a: &Attempt<'_>,
        spend: Spend,
        in_doubt: bool,
        reason: String,
    ) -> Result<Disposition, RoleError> {
        let job = &a.valid.job;
        let now = super::now_ms();
        let since = job.retrying_since.unwrap_or(now);
        let spent = Duration::from_millis(u64::try_from(now - since).unwrap_or(0));
        let too_many = self
            .settings
            .max_attempts
            .is_some_and(|max| job.attempt + 1 >= max);
        if spent < self.settings.retry_for && !too_many {
            let release = Settle::Release {
                in_doubt,
                retry: true,
            };
            if !self.settle(a, release).await? {
                return Ok(Disposition::Superseded);
            }
            let mut next = job.clone();
            next.retrying_since = Some(since);
            let after = if in_doubt {
                self.backoff(job.attempt).max(self.settings.doubt_wait)
            } else {
                self.backoff(job.attempt)
            };
            return Ok(Disposition::Retry {
                after,
                job: next,
                reason,
            });
        }
        let (outcome, after) = decide::give_up(spend, in_doubt);
        let reason = format!(
            "gave up after {} attempts over {}s: {reason}",
            job.attempt + 1,
            spent.as_secs()
        );
        match self.finish(a, outcome, after).await? {
            Disposition::Done(outcome) => Ok(Disposition::GiveUp { outcome, reason }),
            other => Ok(other),
        }
    }

    /// Ends the attempt without an outcome and without counting it as one; `holds`: it holds
    /// the lease (released first, fenced).
    async fn wait(
        &self,
        a: &Attempt<'_>,
        holds: bool,
        until: Until,
        fleet: &AppFleet,
    ) -> Result<Disposition, RoleError> {
        let after = match until {
            Until::NextMinute => super::until_next_minute(),
            Until::FleetPause => {
                tracing::warn!(cooldown = ?self.settings.quota_cooldown, "WeChat daily quota reached (45009): pausing the fleet");
                let left = fleet.pause.pause_for(self.settings.quota_cooldown).await?;
                until_pause_ends(left)
            }
            Until::TokenTrouble => {
                tracing::debug!(pause = ?TOKEN_WAIT, "WeChat refused a freshly refreshed access token: pausing the app's sends");
                until_pause_ends(fleet.pause.pause_for(TOKEN_WAIT).await?)
            }
        };
        self.park(a, holds, after).await
    }

    /// Parks the job for `after` without counting an attempt; `holds`: the attempt holds the
    /// lease (released first, fenced).
    async fn park(
        &self,
        a: &Attempt<'_>,
        holds: bool,
        after: Duration,
    ) -> Result<Disposition, RoleError> {
        if holds && !self.release(a).await? {
            return Ok(Disposition::Superseded);
        }
        Ok(Disposition::Park {
            job: a.valid.job.clone(),
            after,
        })
    }

    /// One settle of this attempt, fenced by its token: `false` when it was not applied (the
    /// lease was taken over).
    /// Lets go of the lease without counting an attempt, the credential held for the next one
    /// with the doubt as this attempt knows it; fenced like any settle (`false`: superseded).
    async fn release(&self, a: &Attempt<'_>) -> Result<bool, RoleError> {
        let release = Settle::Release {
            in_doubt: a.state.in_doubt,
            retry: false,
        };
        self.settle(a, release).await
    }

    async fn settle(&self, a: &Attempt<'_>, how: Settle<'_>) -> Result<bool, RoleError> {
        let job = &a.valid.job;
        Ok(self
            .bank
            .campaign_settle_with(
                a.app,
                &a.valid.open_id,
                &job.mark_id(),
                &job.template_id,
                &a.owner,
                how,
                a.receipt(),
            )
            .await?)
    }
}

/// One attempt at one job: who it is for, its fencing token and what it knows.
struct Attempt<'a> {
    valid: &'a ValidJob,
    app: &'a AppId,
    /// The fields of the job's receipts, if it asks for them (contract 8.3).
    receipt: Option<String>,
    /// The msgid WeChat gave this attempt's send.
    msgid: Option<i64>,
    /// A single message whose id the claim found bound to another user (nothing sent).
    reused: AtomicBool,
    /// The app's frequency cap this message is held to, if it counts (contract 8.5).
    cap: Option<u32>,
    /// An [`Unsent`] as a number: the campaign is cancelled (or quiet hours skip the
    /// recipient) and this attempt resumes a credential a dead attempt held, to give it back
    /// and record that outcome (or, in doubt, to go on).
    unsent: AtomicU8,
    /// The fencing token: unique to this attempt, the owner of its lease.
    owner: String,
    state: State,
    /// The waits before quick resends.
    quick: Box<dyn Iterator<Item = Duration> + Send + Sync>,
}

/// What an attempt that resumes an earlier attempt's lease records instead of sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Unsent {
    No = 0,
    Cancelled = 1,
    SkippedQuietHours = 2,
}

impl Unsent {
    fn outcome(self) -> Recorded {
        match self {
            Unsent::SkippedQuietHours => Recorded::SkippedQuietHours,
            Unsent::No | Unsent::Cancelled => Recorded::Cancelled,
        }
    }
}

impl Attempt<'_> {
    fn unsent(&self) -> Unsent {
        match self.unsent.load(Ordering::Relaxed) {
            1 => Unsent::Cancelled,
            2 => Unsent::SkippedQuietHours,
            _ => Unsent::No,
        }
    }

    /// From now on the attempt resumes the recipient to record `u` (a cancel wins).
    fn resume_unsent(&self, u: Unsent) {
        if self.unsent() != Unsent::Cancelled {
            self.unsent.store(u as u8, Ordering::Relaxed);
        }
    }

    /// The receipt its settle writes (with the msgid WeChat gave, once it gave one).
    fn receipt(&self) -> Option<Receipt<'_>> {
        self.receipt.as_deref().map(|fields| Receipt {
            fields,
            msgid: self.msgid,
        })
    }
}

/// How long a job parks while the app's sends are paused for `left` more: the longest delay
/// tier within it (at least the shortest), so the job looks again as the pause ends rather
/// than up to a tier later (a park is rounded *up* to a tier); if the pause is still on then,
/// it parks again for what is left, calling nothing.
fn until_pause_ends(left: Duration) -> Duration {
    let tier = DELAY_TIERS
        .iter()
        .rev()
        .copied()
        .find(|t| Duration::from_secs(u64::from(*t)) <= left)
        .unwrap_or(DELAY_TIERS[0]);
    Duration::from_secs(u64::from(tier))
}

/// The label of a claim's result, for [`m::CLAIMS`].
fn claim_result(c: &CampaignClaim) -> &'static str {
    match c {
        CampaignClaim::Fresh(_) => "fresh",
        CampaignClaim::Held {
            taken_over: true, ..
        } => "taken_over",
        CampaignClaim::Held { .. } => "held",
        CampaignClaim::Busy(_) => "busy",
        CampaignClaim::NoCredential => "no_credential",
        CampaignClaim::Capped => "capped",
        CampaignClaim::Done(_) => "done",
        CampaignClaim::Superseded => "superseded",
    }
}

/// The job's field → value as WeChat's subscribe `{"field": {"value": v}}`.
fn wrap_values(
    data: &std::collections::BTreeMap<String, wxpush_domain::DataItem>,
) -> Map<String, Value> {
    data.iter()
        .map(|(k, v)| (k.clone(), json!({ "value": v.value })))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_job_looks_again_as_the_pause_ends() {
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(until_pause_ends(Duration::from_millis(300)), secs(1));
        assert_eq!(until_pause_ends(secs(1)), secs(1));
        assert_eq!(until_pause_ends(Duration::from_millis(4900)), secs(2));
        assert_eq!(until_pause_ends(secs(20)), secs(15));
        assert_eq!(until_pause_ends(secs(3600)), secs(3600));
        assert_eq!(until_pause_ends(secs(86_400)), secs(3600));
    }
}
