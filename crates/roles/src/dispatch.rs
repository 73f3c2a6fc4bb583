//! The dispatch role: campaigns from RabbitMQ, fanned out into one send job per recipient.
//!
//! Per campaign (contract section 5; one at a time per process):
//! 1. parse and validate it ([`wxpush_domain::parse_campaign`]); a bad one is dead-lettered
//!    to `<ns>.dead.dispatch` with its reason;
//! 2. record it once, keyed by its app and `campaignId` (`{ns}:camp:<app>:<id>`): a campaign
//!    already dispatched is a no-op; one being dispatched resumes from its checkpoint. A
//!    campaign naming an app the install does not serve is dead-lettered (`unknown_app`);
//! 3. stream the audience a page at a time (the bank's index of reachable users — for a
//!    subscribe campaign, of users holding a consent for its template — or the explicit
//!    openIds list) and publish one job per user with publisher confirms; after each
//!    confirmed page, count the jobs (`targeted`) and save the checkpoint in one round trip;
//! 4. mark it dispatched and acknowledge the campaign message.
//!
//! Memory stays one page whatever the audience (an explicit list is as large as its message).
//! A dispatcher killed at any moment leaves the campaign unacknowledged; the next one resumes
//! from the checkpoint and may publish the last page again (counted once in `targeted`). Those
//! jobs are duplicates; the senders' campaign marks turn them into `duplicate` counts, never
//! second messages.
//!
//! The page published again is exactly the first copy: a page of the index is written ahead
//! into the record ([`PageInFlight`]) before its jobs go out, and a resuming dispatcher
//! publishes that saved page, not a fresh walk of the index, from which users sent to from the
//! first copy have meanwhile left. So `targeted` is exact after a crash, and a campaign is
//! never shown complete while some of its jobs are still queued. (An explicit list needs no
//! such record: its pages are slices of the message, the same every time.)
//! This module must not claim credentials or call WeChat.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use redis::aio::ConnectionManager;
use wxpush_bank::{Bank, ReachableCursor};
use wxpush_broker::topology::Needs;
use wxpush_broker::{BatchConsumer, Publisher, Topology};
use wxpush_domain::campaign::{Audience, Campaign, CampaignKind, CampaignLimits};
use wxpush_domain::{parse_campaign, AppId, Apps, Config, OpenId};

use crate::metrics as m;
use crate::redelivery::{self, Redeliveries, REDELIVERED, REDELIVERY_LIMIT};
use crate::{supervise, Deps, Health, RoleError, Session, Shutdown};

/// Most bytes of jobs built and in flight at once while a page is published.
const PUBLISH_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The source name of the dispatch role's dead letters (queue `<ns>.dead.dispatch`).
pub const DEAD_LETTER_SOURCE: &str = "dispatch";

/// How long a campaign's record is kept after its last update.
pub const RECORD_TTL_SECS: i64 = 30 * 24 * 3600;

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
}

/// The dispatch role's working parts.
pub struct Dispatcher {
    bank: Bank,
    broker: wxpush_broker::Broker,
    publisher: Publisher,
    topology: Topology,
    conn: ConnectionManager,
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
}

/// Where a campaign's dispatch resumes: its checkpoint, and the page of the index that was
/// being published when the last dispatcher stopped, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint: an index into the explicit list, or an index cursor (`""` at the start).
    pub cursor: String,
    pub in_flight: Option<PageInFlight>,
}

/// A page of an index walk written ahead into the campaign's record (fields `page`, the
/// openIds joined by newlines, and `page_next`, the cursor after it) before its jobs are
/// published; the page's checkpoint removes it. While it is there, the page may have been
/// published in part or in full, so a resuming dispatcher publishes it again as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInFlight {
    pub users: Vec<OpenId>,
    /// The checkpoint after the page (`"<shard>:<scan>"` or `"end"`).
    pub next: String,
}

impl PageInFlight {
    /// A page read from the index, with the cursor the walk continues from.
    pub fn new(users: Vec<OpenId>, next: Option<ReachableCursor>) -> Self {
        Self {
            users,
            next: next.map_or_else(|| "end".to_owned(), |n| format!("{}:{}", n.shard, n.scan)),
        }
    }

    /// Writes the page into the record at `key` (one round trip).
    pub async fn save(&self, conn: &mut ConnectionManager, key: &str) -> redis::RedisResult<()> {
        let users: Vec<&str> = self.users.iter().map(OpenId::as_str).collect();
        redis::pipe()
            .hset(key, "page", users.join("\n"))
            .ignore()
            .hset(key, "page_next", &self.next)
            .ignore()
            .query_async(conn)
            .await
    }

    /// The page in the record's fields, if one is there. (The record is written only by
    /// dispatchers; an entry that is not an openId is dropped rather than published.)
    fn from_fields(page: Option<String>, next: Option<String>) -> Option<Self> {
        let (page, next) = (page?, next?);
        let users = page
            .split('\n')
            .filter(|u| !u.is_empty())
            .filter_map(|u| OpenId::new(u).ok())
            .collect();
        Some(Self { users, next })
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
            conn: deps.bank.connection(),
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
                    let _ = delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
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
        let Some(app) = self.settings.apps.resolve(campaign.app_id.as_ref()) else {
            let app = campaign.app_id.as_ref().map_or("", AppId::as_str);
            let reason = format!("appId {app} is not configured in this install");
            return self.reject(delivery, stats, "unknown_app", &reason).await;
        };
        let app = app.id.clone();
        // Every job names its app, so it is sent for that app even if the default changes.
        campaign.app_id = Some(app.clone());
        let key = record_key(self.bank.keys().namespace(), &app, &campaign.campaign_id);
        let resume = match open_record(&mut self.conn.clone(), &key, &app, &campaign).await? {
            None => {
                tracing::info!(campaign = %campaign.campaign_id, "campaign already dispatched: nothing to do");
                stats.already_dispatched += 1;
                delivery.acker.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
            Some(r) => r,
        };
        tracing::info!(campaign = %campaign.campaign_id, from = %resume.cursor, "dispatching");
        match self
            .fan_out(&campaign, &app, &key, resume, stats, shutdown)
            .await?
        {
            Progress::Finished => {
                let _: () = redis::pipe()
                    .hset(&key, "state", "dispatched")
                    .ignore()
                    .hset(&key, "dispatched_at_ms", now_ms())
                    .ignore()
                    .expire(&key, RECORD_TTL_SECS)
                    .ignore()
                    .query_async(&mut self.conn.clone())
                    .await?;
                stats.campaigns += 1;
                metrics::counter!(m::CAMPAIGNS_DISPATCHED).increment(1);
                tracing::info!(campaign = %campaign.campaign_id, "campaign dispatched");
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            Progress::Interrupted => {
                tracing::info!(campaign = %campaign.campaign_id, "stopping mid-campaign: handed back at its checkpoint");
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Publishes the jobs from `cursor` on, page by page, checkpointing after each page.
    async fn fan_out(
        &self,
        c: &Campaign,
        app: &AppId,
        key: &str,
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
                    self.publish_page(c, app, key, &list[at..end], &end.to_string(), stats)
                        .await?;
                    at = end;
                }
            }
            Audience::All => {
                let mut at = parse_index_cursor(&resume.cursor);
                if let Some(p) = resume.in_flight {
                    // The page the last dispatcher was publishing: the same users again.
                    tracing::info!(campaign = %c.campaign_id, users = p.users.len(), "publishing again the page a stopped dispatcher was publishing");
                    self.publish_page(c, app, key, &p.users, &p.next, stats)
                        .await?;
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
                    if !ahead.users.is_empty() {
                        ahead.save(&mut self.conn.clone(), key).await?;
                    }
                    self.publish_page(c, app, key, &ahead.users, &ahead.next, stats)
                        .await?;
                    at = p.next;
                }
            }
        }
        Ok(Progress::Finished)
    }

    /// Publishes one job per user to the app's send queue ([`Topology::send_queue_for`]),
    /// confirmed by the broker, then checkpoints the page: `next` is where the walk goes on.
    async fn publish_page(
        &self,
        c: &Campaign,
        app: &AppId,
        key: &str,
        users: &[OpenId],
        next: &str,
        stats: &mut DispatchStats,
    ) -> Result<(), RoleError> {
        // Jobs are built and confirmed a few MiB at a time: a page of jobs that each carry
        // 32 KiB of data would otherwise be 32 MiB at once.
        let queue = self.topology.send_queue_for(app);
        let mut jobs = users.iter().filter_map(|u| c.job_for(u)).peekable();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        while jobs.peek().is_some() {
            let mut bytes = 0;
            while bytes < PUBLISH_CHUNK_BYTES {
                let Some(job) = jobs.next() else { break };
                let body = job.to_json();
                bytes += body.len();
                bodies.push(body);
            }
            self.publisher
                .publish_all("", bodies.iter().map(|b| (queue.as_str(), b.as_slice())))
                .await?;
            bodies.clear();
        }
        self.checkpoint(key, users.len(), next).await?;
        stats.jobs_published += users.len() as u64;
        metrics::counter!(m::JOBS_PUBLISHED).increment(users.len() as u64);
        Ok(())
    }

    /// Counts a confirmed page and moves the checkpoint past it, atomically (MULTI/EXEC),
    /// forgetting the page written ahead: a page is counted once even if a crash makes the
    /// next dispatcher publish it again.
    async fn checkpoint(&self, key: &str, published: usize, cursor: &str) -> Result<(), RoleError> {
        let _: () = redis::pipe()
            .atomic()
            .hincr(key, "targeted", published as u64)
            .ignore()
            .hset(key, "cursor", cursor)
            .ignore()
            .hdel(key, &["page", "page_next"])
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
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

/// The record's field holding the campaign's send job with an empty `openId`
/// ([`Campaign::job_template`]): what `wxpush campaign retry` sends again.
pub const JOB_TEMPLATE_FIELD: &str = "job";

/// The key of a campaign's record, `{ns}:camp:<app>:<campaignId>`: two apps may each run a
/// campaign of the same id. (An appId has no `:`, so no id of one app reaches another's key.)
pub fn record_key(ns: impl std::fmt::Display, app: &AppId, campaign_id: &str) -> String {
    format!("{ns}:camp:{app}:{campaign_id}")
}

/// Records campaign `c` of `app` at `key` if it is new and returns where its dispatch starts
/// (`None`: already dispatched). The record is written once: a republished campaign with
/// other content keeps the first one's. Public so tests can leave a campaign as a killed
/// dispatcher leaves it.
pub async fn open_record(
    conn: &mut ConnectionManager,
    key: &str,
    app: &AppId,
    c: &Campaign,
) -> Result<Option<Resume>, RoleError> {
    let created: bool = redis::cmd("HSETNX")
        .arg(key)
        .arg("started_at_ms")
        .arg(now_ms())
        .query_async(&mut *conn)
        .await?;
    if created {
        let audience = match c.audience {
            Audience::All => "all",
            Audience::OpenIds(_) => "list",
        };
        let _: () = redis::pipe()
            .hset_multiple(
                key,
                &[
                    ("app", app.to_string()),
                    ("kind", c.kind.name().to_owned()),
                    ("template_id", c.template_id.clone()),
                    ("audience", audience.to_owned()),
                    ("state", "dispatching".to_owned()),
                    ("targeted", "0".to_owned()),
                    (
                        "rejected_recipients",
                        c.rejected_recipients.len().to_string(),
                    ),
                    ("cursor", String::new()),
                    (
                        JOB_TEMPLATE_FIELD,
                        String::from_utf8_lossy(&c.job_template().to_json()).into_owned(),
                    ),
                ],
            )
            .ignore()
            .expire(key, RECORD_TTL_SECS)
            .ignore()
            .query_async(&mut *conn)
            .await?;
        return Ok(Some(Resume {
            cursor: String::new(),
            in_flight: None,
        }));
    }
    type Fields = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let (state, cursor, page, page_next): Fields = redis::cmd("HMGET")
        .arg(key)
        .arg("state")
        .arg("cursor")
        .arg("page")
        .arg("page_next")
        .query_async(&mut *conn)
        .await?;
    if state.as_deref() == Some("dispatched") {
        return Ok(None);
    }
    Ok(Some(Resume {
        cursor: cursor.unwrap_or_default(),
        in_flight: PageInFlight::from_fields(page, page_next),
    }))
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
