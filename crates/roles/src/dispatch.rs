//! The dispatch role: campaigns from RabbitMQ, fanned out into one send job per recipient.
//!
//! Per campaign (contract section 5; one at a time per process):
//! 1. parse and validate it ([`wxpush_domain::parse_campaign`]); a bad one is dead-lettered
//!    to `<ns>.dead.dispatch` with its reason; one naming an app the install does not serve
//!    too (`unknown_app`);
//! 2. open its record ([`wxpush_bank::record`], `{ns}:camp:{<app>.<n>}:<id>`) and take its dispatch
//!    lease: a campaign already dispatched is a no-op; one being dispatched resumes from its
//!    checkpoint; one whose lease another live dispatcher holds is waited for (below);
//! 3. stream the audience a page at a time (the bank's index of reachable users — for a
//!    subscribe campaign, of users holding a consent for its template — or the explicit
//!    openIds list) and publish one job per user with publisher confirms; after each
//!    confirmed page, count the jobs (`targeted`) and save the checkpoint in one fenced step;
//! 4. mark it dispatched and acknowledge the campaign message.
//!
//! **Scheduled campaigns** (`sendAt`, contract 8.5). A `sendAt` more than 366 days ahead (this
//! process's clock) is dead-lettered `invalid_send_at`. The record decides, on Redis's clock
//! (the one the fleet shares), whether the campaign is due ([`Opened::Scheduled`]): if not,
//! the record shows it `scheduled` and the dispatcher **parks the campaign message itself** in
//! `<ns>.dispatch.delay.<N>s` (the longest tier not longer than the time left,
//! [`park_tier`]: it never comes back late; back early, it is parked again in a shorter
//! tier), published with confirms before the original is acknowledged, and goes on with the
//! next campaign. Under a second before its time it waits the rest itself (at most a second,
//! the only time a scheduled campaign holds a dispatcher up). Killed between the publish and
//! the acknowledgement, the campaign has two copies: harmless, the lease below makes one a
//! no-op. Nothing is held in a process, so the schedule survives restarts of every role and
//! of the broker (durable queues, persistent messages). Cancelled while scheduled: its copies
//! are acknowledged and nothing is fanned out ([`Opened::Cancelled`]). Paused while scheduled
//! and due: parked [`PAUSED_TIER`] seconds at a time, nothing fanned out, until resumed.
//!
//! **One dispatcher per campaign.** The record carries a lease (10 s, Redis time) whose owner
//! token every write names ([`wxpush_bank::record`]); the owner renews it in the background
//! while it fans out. Two copies of one campaign (published twice, or redelivered while the
//! first dispatcher still works) would otherwise both fan it out, both count `targeted` and
//! delete each other's page written ahead, and the campaign would never show complete.
//! - A dispatcher that meets a lease held by another **waits beside it, holding its copy
//!   unacknowledged**, looking again every second: when the owner finishes, the copy is
//!   acknowledged as already dispatched; when the lease runs out (its owner died or stalled),
//!   this one takes the campaign over from the checkpoint. It never acknowledges its copy
//!   unseen, because that copy may be the owner's own: a dispatcher killed mid-campaign has
//!   its copy requeued by RabbitMQ at once, seconds before its lease runs out, and a
//!   dispatcher taking that copy for a duplicate would lose the campaign. (Parking the copy in
//!   a delay queue would free the waiting process but needs a queue of its own; campaigns
//!   published twice are rare, so a waiting dispatcher is the simpler price. While it waits,
//!   it takes no other campaign.)
//! - A dispatcher whose renewal or write is refused (another took the lease over after it
//!   stalled past it) stops at once without writing and acknowledges its copy: the new owner
//!   holds a copy of its own, which RabbitMQ returns if that one dies too.
//! - One stopped by shutdown, or by an outage, releases its lease (best effort) and hands its
//!   copy back, so the next one takes over at once.
//!
//! Memory stays one page whatever the audience (an explicit list is as large as its message).
//! A dispatcher killed at any moment leaves the campaign unacknowledged; the next one resumes
//! from the checkpoint once the lease has run out and may publish the last page again
//! (counted once in `targeted`). Those jobs are duplicates; the senders' campaign marks turn
//! them into `duplicate` counts, never second messages.
//!
//! The page published again is exactly the first copy: a page of the index is written ahead
//! into the record ([`PageInFlight`]) before its jobs go out, and a resuming dispatcher
//! publishes that saved page, not a fresh walk of the index, from which users sent to from the
//! first copy have meanwhile left. So `targeted` is exact after a crash, and a campaign is
//! never shown complete while some of its jobs are still queued. (An explicit list needs no
//! such record: its pages are slices of the message, the same every time.)
//! This module must not claim credentials or call WeChat, nor write the record but through
//! [`wxpush_bank::record`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use wxpush_bank::record::{CampaignRecord, Lease, Opened, PageInFlight, Resume, DISPATCH_LEASE};
use wxpush_bank::{Bank, ReachableCursor};
use wxpush_broker::consume::hand_back;
use wxpush_broker::publish::{batches_by_bytes, CONFIRM_BATCH_BYTES};
use wxpush_broker::topology::{park_tier, Needs};
use wxpush_broker::{BatchConsumer, Publisher, Topology};
use wxpush_domain::campaign::{Audience, Campaign, CampaignKind, CampaignLimits};
use wxpush_domain::{parse_campaign, AppId, Apps, Config, SendJob};

use crate::metrics as m;
use crate::redelivery::{self, Redeliveries, REDELIVERED, REDELIVERY_LIMIT};
use crate::{supervise, Deps, Health, RoleError, Session, Shutdown};

/// The source name of the dispatch role's dead letters (queue `<ns>.dead.dispatch`).
pub const DEAD_LETTER_SOURCE: &str = "dispatch";

/// Tunables of the dispatch role.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// The apps served: a campaign naming another is refused.
    pub apps: Apps,
    /// Recipients read and published per page (one checkpoint per page).
    pub page_size: usize,
    pub limits: CampaignLimits,
}

impl DispatchSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            apps: c.apps.clone(),
            page_size: c.dispatch_page_size,
            limits: CampaignLimits::default(),
        }
    }
}

/// Counters of one dispatch run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Campaigns fully dispatched by this process.
    pub campaigns: u64,
    /// Campaign messages for campaigns already dispatched (republished or redelivered).
    pub already_dispatched: u64,
    pub jobs_published: u64,
    pub dead_lettered: u64,
    /// Campaign messages that met another dispatcher's lease and waited beside it.
    pub waited: u64,
    /// Campaigns this process stopped dispatching because another took its lease over.
    pub handed_over: u64,
    /// Scheduled campaigns whose record this process opened (contract 8.5).
    pub scheduled: u64,
    /// Campaign messages parked in a dispatch delay queue (not yet due, or due but paused).
    pub parked: u64,
    /// Copies of campaigns cancelled while scheduled, acknowledged with nothing fanned out.
    pub cancelled_before_due: u64,
}

/// The tier (seconds) a scheduled campaign whose time has come is parked in while an operator
/// has it paused: `resume` lets it go within about this long.
pub const PAUSED_TIER: u32 = 5;

/// The dispatch role's working parts.
pub struct Dispatcher {
    bank: Bank,
    broker: wxpush_broker::Broker,
    publisher: Publisher,
    topology: Topology,
    settings: DispatchSettings,
    redeliveries: Redeliveries,
}

/// Runs the dispatch role until `shutdown` fires; a campaign in progress stops after its
/// current page (checkpointed) and goes back to the queue for the next dispatcher. An outage
/// of RabbitMQ or Redis hands the campaign back the same way and pauses the role until they
/// answer ([`crate::supervise`]).
pub async fn run(
    deps: &Deps,
    topology: &Topology,
    settings: &DispatchSettings,
    health: &Health,
    shutdown: Shutdown,
) -> Result<DispatchStats, RoleError> {
    let total = std::sync::Mutex::new(DispatchStats::default());
    supervise("dispatch", deps, health, shutdown, |session| {
        let total = &total;
        async move {
            let d = Dispatcher::start(&session.deps, topology, settings).await?;
            let mut stats = DispatchStats::default();
            let r = d.consume(&session, &mut stats).await;
            d.publisher.close().await;
            if let Ok(mut t) = total.lock() {
                t.campaigns += stats.campaigns;
                t.already_dispatched += stats.already_dispatched;
                t.jobs_published += stats.jobs_published;
                t.dead_lettered += stats.dead_lettered;
                t.waited += stats.waited;
                t.handed_over += stats.handed_over;
                t.scheduled += stats.scheduled;
                t.parked += stats.parked;
                t.cancelled_before_due += stats.cancelled_before_due;
            }
            r
        }
    })
    .await?;
    Ok(total.into_inner().unwrap_or_default())
}

enum Progress {
    Finished,
    Interrupted,
    /// Another dispatcher took the lease over: this one wrote nothing after it and stops.
    LeaseLost,
}

/// How often a dispatcher waiting beside another one's lease looks at the record again.
const HELD_POLL: Duration = Duration::from_secs(1);

/// The dispatcher holding a campaign's lease: the record, its lease, renewed in the
/// background every third of its duration while the campaign is fanned out, and whether a
/// renewal was refused (another dispatcher took the lease over).
struct Owner {
    record: CampaignRecord,
    lease: Lease,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Owner {
    fn new(record: CampaignRecord, lease: Lease) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn({
            let (record, lease, lost) = (record.clone(), lease.clone(), lost.clone());
            async move {
                let every = lease.duration / 3;
                loop {
                    tokio::time::sleep(every).await;
                    match record.renew(&lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        // Redis unreachable: the next write (fenced) or renewal tells.
                        Err(e) => tracing::warn!(error = %e, "cannot renew the dispatch lease"),
                    }
                }
            }
        });
        Self {
            record,
            lease,
            lost,
            renewer,
        }
    }

    /// A renewal was refused: another dispatcher owns the campaign now.
    fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Marks the campaign dispatched (`false`: refused, the lease is lost). The renewals stop
    /// first; one already sent reaches Redis before this (one connection, in order).
    async fn finish(&self) -> Result<bool, RoleError> {
        self.renewer.abort();
        Ok(self.record.finish(&self.lease).await?)
    }

    /// Ends the lease now (best effort), so that the next dispatcher takes over at once. The
    /// renewals stop first, so that none extends the lease after it.
    async fn release(&self) {
        self.renewer.abort();
        let _ = self.record.release(&self.lease).await;
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Dispatcher {
    pub async fn start(
        deps: &Deps,
        topology: &Topology,
        settings: &DispatchSettings,
    ) -> Result<Self, RoleError> {
        topology.declare(&deps.broker, Needs::Dispatch).await?;
        let publisher = Publisher::open(&deps.broker, topology.clone()).await?;
        Ok(Self {
            bank: deps.bank.clone(),
            broker: deps.broker.clone(),
            publisher,
            topology: topology.clone(),
            settings: settings.clone(),
            redeliveries: Redeliveries::new(&deps.bank),
        })
    }

    async fn consume(&self, session: &Session, stats: &mut DispatchStats) -> Result<(), RoleError> {
        let mut shutdown = session.shutdown.clone();
        let mut consumer = BatchConsumer::start(
            &self.broker,
            &self.topology.dispatch_queue(),
            1,
            "wxpush-dispatch",
        )
        .await?;
        session.consuming();
        let outcome = loop {
            let next = tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                b = consumer.next_batch(1, usize::MAX) => b,
            };
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => {
                    break Err(wxpush_broker::BrokerError::ConsumerGone {
                        queue: self.topology.dispatch_queue(),
                    }
                    .into())
                }
                Err(e) => break Err(e.into()),
            };
            metrics::counter!(m::CONSUMED, "queue" => "dispatch").increment(batch.len() as u64);
            let mut failed = None;
            for delivery in &batch.deliveries {
                if let Err(e) = self.handle(delivery, stats, &shutdown).await {
                    let _ = hand_back(delivery).await;
                    if e.is_recoverable() {
                        // RabbitMQ or Redis is gone: the supervisor waits for them.
                        failed = Some(e);
                        break;
                    }
                    tracing::warn!(error = %e, "campaign handed back");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        let _ = consumer.cancel().await;
        consumer.close().await;
        outcome
    }

    async fn handle(
        &self,
        delivery: &Delivery,
        stats: &mut DispatchStats,
        shutdown: &Shutdown,
    ) -> Result<(), RoleError> {
        let times = self.redeliveries.count("dispatch", &[delivery]).await?;
        if let Some(&n) = times.first().filter(|n| **n >= REDELIVERY_LIMIT) {
            return self
                .reject(delivery, stats, REDELIVERED, &redelivery::reason(n))
                .await;
        }
        let mut campaign = match parse_campaign(&delivery.data, self.settings.limits) {
            Ok(c) => c,
            Err(e) => return self.reject(delivery, stats, e.code(), &e.to_string()).await,
        };
        if let Err(e) = campaign.check_send_at(local_now_ms()) {
            return self.reject(delivery, stats, e.code(), &e.to_string()).await;
        }
        let Some(app) = self.settings.apps.resolve(campaign.app_id.as_ref()) else {
            let app = campaign.app_id.as_ref().map_or("", AppId::as_str);
            let reason = format!("appId {app} is not configured in this install");
            return self.reject(delivery, stats, "unknown_app", &reason).await;
        };
        let app = app.id.clone();
        // Every job names its app, so it is sent for that app even if the default changes.
        campaign.app_id = Some(app.clone());
        let record = self.bank.record_for(&app, &campaign);
        let Some((lease, created, resume)) = self
            .take_lease(&record, &campaign, delivery, stats, shutdown)
            .await?
        else {
            return Ok(());
        };
        tracing::info!(campaign = %campaign.campaign_id, from = %resume.cursor, created, "dispatching");
        let owner = Owner::new(record, lease);
        let progress = self
            .fan_out(&campaign, &app, &owner, resume, stats, shutdown)
            .await;
        let progress = match progress {
            // The finish is fenced like every write: refused, another dispatcher owns it now.
            Ok(Progress::Finished) => match owner.finish().await? {
                true => Progress::Finished,
                false => Progress::LeaseLost,
            },
            Ok(p) => p,
            Err(e) => {
                // Hand the campaign back (the caller requeues the message) and let the next
                // dispatcher take it at once rather than after the lease (best effort: Redis
                // may be what failed).
                owner.release().await;
                return Err(e);
            }
        };
        match progress {
            Progress::Finished => {
                stats.campaigns += 1;
                metrics::counter!(m::CAMPAIGNS_DISPATCHED).increment(1);
                tracing::info!(campaign = %campaign.campaign_id, "campaign dispatched");
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            Progress::Interrupted => {
                tracing::info!(campaign = %campaign.campaign_id, "stopping mid-campaign: handed back at its checkpoint");
                owner.release().await;
                hand_back(delivery).await?;
            }
            Progress::LeaseLost => {
                // The dispatcher that took the lease over holds a copy of the campaign of its
                // own (it took the lease while holding it), which RabbitMQ gives back if that
                // one dies too: this copy is not needed. (If this process's channel is gone,
                // the acknowledgement fails and RabbitMQ requeues the copy: harmless.)
                tracing::warn!(campaign = %campaign.campaign_id, "another dispatcher took this campaign over (this one stalled past its lease): stopping without writing");
                stats.handed_over += 1;
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
        }
        Ok(())
    }

    /// Opens the campaign's record and takes its dispatch lease, waiting beside another live
    /// dispatcher that holds it until that one finishes (then this copy is acknowledged as
    /// already dispatched) or its lease runs out (then this one takes over). `None`: nothing
    /// more to do with this delivery (acknowledged, or handed back on shutdown).
    async fn take_lease(
        &self,
        record: &CampaignRecord,
        campaign: &Campaign,
        delivery: &Delivery,
        stats: &mut DispatchStats,
        shutdown: &Shutdown,
    ) -> Result<Option<(Lease, bool, Resume)>, RoleError> {
        let mut shutdown = shutdown.clone();
        let mut waited = false;
        loop {
            match record.open(campaign, DISPATCH_LEASE).await? {
                Opened::Owned {
                    lease,
                    created,
                    resume,
                } => return Ok(Some((lease, created, resume))),
                Opened::Conflict => {
                    let reason = "the campaign was sent whole and in parts under one campaignId";
                    self.reject(delivery, stats, "part_conflict", reason)
                        .await?;
                    return Ok(None);
                }
                Opened::Dispatched => {
                    tracing::info!(campaign = %campaign.campaign_id, part = campaign.part.map(|p| p.index), "campaign already dispatched: nothing to do");
                    stats.already_dispatched += 1;
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    return Ok(None);
                }
                Opened::Scheduled { left, created } => {
                    if created {
                        stats.scheduled += 1;
                        metrics::counter!(m::CAMPAIGNS_SCHEDULED).increment(1);
                        tracing::info!(campaign = %campaign.campaign_id, part = campaign.part.map(|p| p.index), send_at_ms = campaign.send_at_ms, left_ms = left.as_millis() as u64, "campaign scheduled: held back until its time");
                    }
                    match park_tier(left) {
                        Some(tier) => {
                            self.park(delivery, tier, "scheduled", stats).await?;
                            return Ok(None);
                        }
                        // Under a second to go: waited out here, then opened again.
                        None => {
                            tokio::select! {
                                _ = shutdown.wait() => {
                                    hand_back(delivery).await?;
                                    return Ok(None);
                                }
                                _ = tokio::time::sleep(left + Duration::from_millis(1)) => {}
                            }
                        }
                    }
                }
                Opened::Cancelled => {
                    tracing::info!(campaign = %campaign.campaign_id, part = campaign.part.map(|p| p.index), "campaign cancelled while scheduled: nothing to fan out");
                    stats.cancelled_before_due += 1;
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    return Ok(None);
                }
                Opened::Paused => {
                    tracing::debug!(campaign = %campaign.campaign_id, "scheduled campaign due but paused: held until resumed");
                    self.park(delivery, PAUSED_TIER, "paused", stats).await?;
                    return Ok(None);
                }
                Opened::Held { left } => {
                    if !waited {
                        tracing::info!(campaign = %campaign.campaign_id, lease_left_ms = left.as_millis() as u64, "another dispatcher is dispatching this campaign: waiting until it finishes or its lease runs out");
                        stats.waited += 1;
                        waited = true;
                    }
                    let pause = left.clamp(Duration::from_millis(50), HELD_POLL);
                    tokio::select! {
                        _ = shutdown.wait() => {
                            hand_back(delivery).await?;
                            return Ok(None);
                        }
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Publishes the jobs from `cursor` on, page by page, checkpointing after each page.
    async fn fan_out(
        &self,
        c: &Campaign,
        app: &AppId,
        owner: &Owner,
        resume: Resume,
        stats: &mut DispatchStats,
        shutdown: &Shutdown,
    ) -> Result<Progress, RoleError> {
        let page = self.settings.page_size;
        match &c.audience {
            Audience::OpenIds(list) => {
                let mut at: usize = resume.cursor.parse().unwrap_or(0);
                while at < list.len() {
                    if shutdown.is_triggered() {
                        return Ok(Progress::Interrupted);
                    }
                    let end = (at + page).min(list.len());
                    let jobs = list[at..end].iter().map(|u| c.job_for_user(u));
                    if !self
                        .publish_page(app, owner, jobs, &end.to_string(), stats)
                        .await?
                    {
                        return Ok(Progress::LeaseLost);
                    }
                    at = end;
                }
            }
            // Each recipient's job carries its own data (or, refused, the reason), made as
            // its page is published: what is held is the message and one page of jobs.
            Audience::Recipients(list) => {
                let mut at: usize = resume.cursor.parse().unwrap_or(0);
                while at < list.len() {
                    if shutdown.is_triggered() {
                        return Ok(Progress::Interrupted);
                    }
                    let end = (at + page).min(list.len());
                    let jobs = list[at..end].iter().map(|r| c.job_for_recipient(r));
                    if !self
                        .publish_page(app, owner, jobs, &end.to_string(), stats)
                        .await?
                    {
                        return Ok(Progress::LeaseLost);
                    }
                    at = end;
                }
            }
            Audience::All => {
                let mut at = parse_index_cursor(&resume.cursor);
                if let Some(p) = resume.in_flight {
                    // The page the last dispatcher was publishing: the same users again.
                    tracing::info!(campaign = %c.campaign_id, users = p.users.len(), "publishing again the page a stopped dispatcher was publishing");
                    let jobs = p.users.iter().map(|u| c.job_for_user(u));
                    if !self.publish_page(app, owner, jobs, &p.next, stats).await? {
                        return Ok(Progress::LeaseLost);
                    }
                    at = parse_index_cursor(&p.next);
                }
                while let Some(pos) = at {
                    if shutdown.is_triggered() {
                        return Ok(Progress::Interrupted);
                    }
                    let p = match &c.kind {
                        CampaignKind::Template { .. } => {
                            self.bank.reachable_page(app, pos, page).await?
                        }
                        // Every user holding a consent for the template (its own index).
                        CampaignKind::Subscribe { .. } => {
                            self.bank
                                .consent_page(app, &c.template_id, pos, page)
                                .await?
                        }
                    };
                    let ahead = PageInFlight::new(p.users, p.next);
                    if !ahead.users.is_empty()
                        && !owner.record.save_page(&owner.lease, &ahead).await?
                    {
                        return Ok(Progress::LeaseLost);
                    }
                    let jobs = ahead.users.iter().map(|u| c.job_for_user(u));
                    if !self
                        .publish_page(app, owner, jobs, &ahead.next, stats)
                        .await?
                    {
                        return Ok(Progress::LeaseLost);
                    }
                    at = p.next;
                }
            }
        }
        Ok(Progress::Finished)
    }

    /// Publishes one job per user to the app's send queue ([`Topology::send_queue_for`]),
    /// confirmed by the broker, then checkpoints the page: `next` is where the walk goes on.
    /// `false`: the lease is lost (nothing more is published once that is known, and the
    /// checkpoint is refused).
    async fn publish_page(
        &self,
        app: &AppId,
        owner: &Owner,
        jobs: impl Iterator<Item = SendJob>,
        next: &str,
        stats: &mut DispatchStats,
    ) -> Result<bool, RoleError> {
        // Jobs are built and confirmed a few MiB at a time.
        let queue = self.topology.send_queue_for(app);
        let mut published = 0usize;
        let jobs = jobs.map(|j| {
            published += 1;
            j.to_json()
        });
        for batch in batches_by_bytes(jobs, CONFIRM_BATCH_BYTES) {
            if owner.lost() {
                return Ok(false);
            }
            self.publisher
                .publish_all("", batch.iter().map(|b| (queue.as_str(), b.as_slice())))
                .await?;
        }
        // Counts the confirmed page and moves the checkpoint past it in one step, forgetting
        // the page written ahead: a page is counted once even if a crash makes the next
        // dispatcher publish it again. Refused if another dispatcher took the lease over.
        if !owner
            .record
            .checkpoint(&owner.lease, published, next)
            .await?
        {
            return Ok(false);
        }
        stats.jobs_published += published as u64;
        metrics::counter!(m::JOBS_PUBLISHED).increment(published as u64);
        Ok(true)
    }

    /// Parks the campaign message in the dispatch delay queue of `tier` seconds (it comes back
    /// to the dispatch queue then), confirmed by the broker, then acknowledges this copy: a
    /// crash between the two leaves two copies, never none.
    async fn park(
        &self,
        delivery: &Delivery,
        tier: u32,
        why: &'static str,
        stats: &mut DispatchStats,
    ) -> Result<(), RoleError> {
        let queue = self.topology.dispatch_delay_queue(tier);
        // The message as it came, but for the broker's own bookkeeping of earlier hops (its
        // dead-letter history and delivery count), which would only grow.
        let mut headers = FieldTable::default();
        if let Some(h) = delivery.properties.headers() {
            for (k, v) in h.inner() {
                let k_text = k.as_str();
                if !(k_text == "x-death"
                    || k_text == "x-delivery-count"
                    || k_text.starts_with("x-first-death-")
                    || k_text.starts_with("x-last-death-"))
                {
                    headers.insert(k.clone(), v.clone());
                }
            }
        }
        let properties = delivery.properties.clone().with_headers(headers);
        self.publisher
            .publish("", &queue, &delivery.data, properties)
            .await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        stats.parked += 1;
        metrics::counter!(m::CAMPAIGNS_PARKED, "reason" => why).increment(1);
        Ok(())
    }

    async fn reject(
        &self,
        delivery: &Delivery,
        stats: &mut DispatchStats,
        code: &str,
        reason: &str,
    ) -> Result<(), RoleError> {
        tracing::warn!(code, reason = %wxpush_domain::short_reason(reason), "campaign dead-lettered");
        self.publisher
            .dead_letter(
                DEAD_LETTER_SOURCE,
                &self.topology.dispatch_queue(),
                delivery,
                code,
                reason,
            )
            .await
            .inspect_err(|e| m::count_refused_dead_letter(DEAD_LETTER_SOURCE, e))?;
        stats.dead_lettered += 1;
        metrics::counter!(m::DEAD_LETTERED, "source" => DEAD_LETTER_SOURCE, "reason" => code.to_owned())
            .increment(1);
        delivery.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

/// This machine's clock, Unix ms (only to bound how far ahead a `sendAt` may be).
fn local_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `""` (start), `"<shard>:<scan>"`, or `"end"`.
fn parse_index_cursor(s: &str) -> Option<ReachableCursor> {
    if s == "end" {
        return None;
    }
    let (shard, scan) = s.split_once(':').unwrap_or(("0", "0"));
    Some(ReachableCursor {
        shard: shard.parse().unwrap_or(0),
        scan: scan.parse().unwrap_or(0),
    })
}
