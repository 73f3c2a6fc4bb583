//! The send role: send jobs from RabbitMQ to WeChat, one credential per message.
//!
//! Per job (many at once, each acknowledged on its own):
//! 1. parse it (a malformed job is dead-lettered with its reason; one that came back too
//!    often, unread, [`crate::redelivery`]);
//! 2. if the fleet is paused for the job's app (WeChat's daily quota, `45009`), park it in a
//!    delay queue (a job for an app this install does not serve is dead-lettered); in the
//!    app's quiet hours (contract 8.5, [`quiet`]), before anything is claimed and without a
//!    Redis call, defer it (parked until the window's end) or record it skipped;
//! 3. claim, call and settle as [`attempt`] performs and [`decide`] decides: one decision table
//!    for template (formId, prepayId) and subscribe (consent) jobs alike, one loop performing
//!    it, every step after the claim fenced by the attempt's lease token;
//! 4. act on what the attempt came to ([`Disposition`]): acknowledge a settled job, re-publish
//!    one to try again later to a delay queue (exponential backoff, so no worker sleeps on a
//!    prefetch slot, within `WXPUSH_SEND_RETRY_FOR`), park one that must wait, dead-letter
//!    one given up; log one line with the openId masked. A claim or settle fewer Redis
//!    replicas acknowledged than `WXPUSH_REDIS_WAIT_REPLICAS` asks is not acknowledged: the
//!    job goes back to the queue, and the session waits for the replicas like for an outage.
//!
//! Each app of the install has its own token, rate limit and pause ([`AppFleet`]); nothing of
//! one app is ever used for another's job.
//! This module must not parse uploads or campaigns, nor know how the bank stores credentials.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use wxpush_bank::Bank;
use wxpush_broker::topology::delay_tier;
use wxpush_broker::topology::Needs;
use wxpush_broker::{JobConsumer, Publisher, Topology};
use wxpush_domain::{parse_job, parse_message, AppId, Config, SendJob, ValidJob};
use wxpush_fleet::{
    FleetPause, PauseSettings, RateLimiter, RateSettings, TokenSettings, TokenStore,
};
use wxpush_wechat::{Client, ClientConfig, Outcome};

use tracing::Instrument;

use crate::metrics as m;
use crate::outcomes::Recorded;
use crate::redelivery::{self, Redeliveries, REDELIVERED, REDELIVERY_LIMIT};

/// Deliveries, from [`REDELIVERY_LIMIT`] on, on which a job dead-lettered for coming back too
/// often still has its recipient settled first.
const ABANDON_TRIES: u32 = 3;
use crate::{supervise, Deps, Health, RoleError, Session, Shutdown};

mod attempt;
pub mod decide;
mod quiet;
use crate::receipts;
mod stop;

/// The source name of the send role's dead letters (queue `<ns>.dead.send`).
pub const DEAD_LETTER_SOURCE: &str = "send";
/// The source name of single messages' dead letters (queue `<ns>.dead.messages`).
pub const MESSAGES_DEAD_LETTER_SOURCE: &str = "messages";

/// Which queue a delivery came from: a send job (`<ns>.send` and its lanes) or a single message
/// (`<ns>.messages.send`, contract 8.2), read into the send job it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Job,
    Message,
}

impl Source {
    /// The queue's name in metrics and redelivery counts.
    fn queue(self) -> &'static str {
        match self {
            Source::Job => "send",
            Source::Message => "messages",
        }
    }

    /// The delivery as a send job, or the dead-letter code and reason.
    fn parse(self, body: &[u8]) -> Result<ValidJob, (&'static str, String)> {
        match self {
            Source::Job => parse_job(body).map_err(|e| (e.code(), e.to_string())),
            Source::Message => parse_message(body).map_err(|e| (e.code(), e.to_string())),
        }
    }
}

/// Tunables of the send role.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Jobs one process handles at once (and twice that many prefetched).
    pub concurrency: usize,
    /// How long a job's failed attempts are retried, from its first failure, before it is
    /// given up (`WXPUSH_SEND_RETRY_FOR`).
    pub retry_for: Duration,
    /// Most attempts (first try included) before a job is given up, if set
    /// (`WXPUSH_SEND_MAX_ATTEMPTS`); by default only `retry_for` bounds them.
    pub max_attempts: Option<u32>,
    /// The longest wait between two attempts (`WXPUSH_SEND_RETRY_MAX_DELAY`).
    pub max_retry_delay: Duration,
    /// Quick resends inside one attempt, for a failure that may pass at once.
    pub quick_retries: u32,
    /// How long the fleet stops sending after WeChat's daily quota answer (`45009`).
    pub quota_cooldown: Duration,
    /// Jobs deferred for quiet hours come back over this long after the window's end, each
    /// user at its own offset (`WXPUSH_QUIET_SPREAD_SECS`).
    pub quiet_spread: Duration,
    /// The least a job waits before a credential in doubt is sent again
    /// ([`decide::DOUBT_WAIT`] from the configuration; shorter only in tests).
    pub doubt_wait: Duration,
}

impl SendSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            concurrency: c.send_concurrency,
            retry_for: c.send_retry_for,
            max_attempts: c.send_max_attempts,
            max_retry_delay: c.send_retry_max_delay,
            quick_retries: 2,
            quota_cooldown: Duration::from_secs(c.quota_cooldown_secs),
            quiet_spread: c.quiet_spread,
            doubt_wait: decide::DOUBT_WAIT,
        }
    }
}

/// Counters of one send run.
#[derive(Debug, Default)]
pub struct SendStats {
    pub jobs: AtomicU64,
    pub sent: AtomicU64,
    pub sent_unconfirmed: AtomicU64,
    pub no_credential: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub credentials_dropped: AtomicU64,
    pub credentials_released: AtomicU64,
    /// Jobs for a user the campaign had already reached: skipped.
    pub duplicates: AtomicU64,
    /// Recipients whose message may have been delivered and cannot be sent again to find out
    /// (a subscribe send, or a job given up, in doubt).
    pub unknown: AtomicU64,
    /// Attempts whose lease another attempt took over: stopped without acting.
    pub superseded: AtomicU64,
    /// Recipients whose own data was refused at dispatch (contract 8.1): recorded, not sent.
    pub invalid_data: AtomicU64,
    /// Recipients not sent because an operator cancelled the campaign (contract 8.5).
    pub cancelled: AtomicU64,
    /// Recipients not sent because their app was in quiet hours and the campaign said skip.
    pub skipped_quiet_hours: AtomicU64,
    /// Jobs held for their app's quiet hours (once per job, when first held).
    pub deferred_quiet_hours: AtomicU64,
    /// Recipients not sent because they were at the app's frequency cap (contract 8.5).
    pub capped: AtomicU64,
    pub wechat_calls: AtomicU64,
    pub failed_by_code: Mutex<HashMap<i64, u64>>,
}

impl SendStats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What became of one job.
enum Disposition {
    /// Finished: record this outcome and acknowledge.
    Done(Recorded),
    /// Try again later: re-publish (attempt counted) after about this long.
    Retry {
        job: SendJob,
        after: Duration,
        reason: String,
    },
    /// Park it (no attempt counted, and the retry budget moved on by the wait): the fleet is
    /// paused, the minute quota is spent, the token cannot be had, or another attempt at the
    /// same campaign and user is in flight.
    Park { job: SendJob, after: Duration },
    /// The retry budget is spent: the recipient is settled with `outcome`, and the job goes
    /// to the dead-letter queue with this reason.
    GiveUp { outcome: Recorded, reason: String },
    /// Another attempt took this one's lease over: it stops without acting, and its copy of
    /// the job is acknowledged (the other attempt has its own).
    Superseded,
    /// Not a job this process can send (its app is not served): dead-letter it.
    Refuse { code: &'static str, reason: String },
}

/// The send role's working parts.
pub struct Sender {
    bank: Bank,
    broker: wxpush_broker::Broker,
    /// WeChat, and each app's token, rate limit and pause.
    parts: SendParts,
    publisher: Publisher,
    topology: Topology,
    settings: SendSettings,
    pub stats: Arc<SendStats>,
    /// Campaign records looked up for a stop (47003), and when: `(checked_at, stopped)`.
    stopped: Mutex<HashMap<String, (std::time::Instant, wxpush_bank::record::Flags)>>,
    redeliveries: Redeliveries,
    /// Where a settle with a receipt is announced, and the drainer publishing it.
    outbox: receipts::Outbox,
    drainer: tokio::sync::Mutex<receipts::Drainer>,
}

/// One app's share of the fleet's state, all of it kept in Redis under the app's own keys:
/// its access token, its send ceiling and its daily-quota pause.
#[derive(Clone)]
pub struct AppFleet {
    pub tokens: TokenStore,
    pub limiter: RateLimiter,
    pub pause: FleetPause,
    /// The app's quiet hours (contract 8.5), if it has any: read in memory per job.
    pub quiet: Option<wxpush_domain::QuietHours>,
    /// Its frequency cap (configuration; counted by the claim scripts, in each user's slot).
    pub cap: wxpush_domain::FrequencyCap,
}

/// What the send role needs beside Redis and RabbitMQ: WeChat, and each app's [`AppFleet`].
#[derive(Clone)]
pub struct SendParts {
    pub wechat: Client,
    /// Every app served, the default first.
    apps: Arc<Vec<(AppId, AppFleet)>>,
}

impl SendParts {
    /// Whether every configured app has its secret, which the send role needs: checked
    /// before connecting to anything, so a missing secret is the error an operator sees first.
    pub fn check(config: &Config) -> Result<(), SendSetupError> {
        match config.apps.iter().find(|a| secret_of(a).is_none()) {
            Some(app) => Err(SendSetupError::MissingSecret(app.id.clone())),
            None => Ok(()),
        }
    }

    /// Builds the WeChat client (with `request_timeout`) and, for every configured app, its
    /// shared token, rate limit (the app's own `send_rate`) and pause. Every app needs its
    /// secret.
    pub async fn connect(
        config: &Config,
        deps: &Deps,
        request_timeout: Duration,
    ) -> Result<Self, SendSetupError> {
        let wechat = Client::new(&ClientConfig {
            request_timeout,
            ..ClientConfig::with_base_url(config.wechat_api_base.clone())
        })
        .map_err(|e| SendSetupError::WeChat(e.to_string()))?;
        let conn = deps.bank.connection();
        let ns = &config.namespace;
        let mut apps = Vec::with_capacity(config.apps.len());
        for app in config.apps.iter() {
            let secret =
                secret_of(app).ok_or_else(|| SendSetupError::MissingSecret(app.id.clone()))?;
            let fleet = AppFleet {
                tokens: TokenStore::new(
                    conn.clone(),
                    ns.clone(),
                    wechat.clone(),
                    app.id.clone(),
                    secret,
                    app.token_source.clone(),
                    TokenSettings::default(),
                ),
                limiter: RateLimiter::new(
                    conn.clone(),
                    ns.clone(),
                    app.id.clone(),
                    app.send_rate,
                    RateSettings::default(),
                ),
                pause: FleetPause::new(
                    conn.clone(),
                    ns.clone(),
                    app.id.clone(),
                    PauseSettings::default(),
                ),
                quiet: app.quiet(),
                cap: app.frequency_cap,
            };
            apps.push((app.id.clone(), fleet));
        }
        Ok(Self {
            wechat,
            apps: Arc::new(apps),
        })
    }

    /// The default app's state.
    pub fn default_app(&self) -> &AppFleet {
        &self.apps[0].1
    }

    /// The default app's id.
    fn default_id(&self) -> &AppId {
        &self.apps[0].0
    }

    /// The app a job means (the one it names, or the default) and its state; `None` when it
    /// names an app this install does not serve.
    pub fn resolve(&self, named: Option<&AppId>) -> Option<(&AppId, &AppFleet)> {
        match named {
            None => Some((self.default_id(), self.default_app())),
            Some(n) => self
                .apps
                .iter()
                .find(|(id, _)| id == n)
                .map(|(id, f)| (id, f)),
        }
    }
}

/// The secret an app's tokens are fetched with: its own, or none needed (an empty one) when
/// they come from the install's token service, which holds the secret itself.
fn secret_of(app: &wxpush_domain::AppConfig) -> Option<wxpush_domain::Secret> {
    match (&app.secret, &app.token_source) {
        (Some(s), _) => Some(s.clone()),
        (None, wxpush_domain::TokenSource::Service(_)) => Some(wxpush_domain::Secret::new("")),
        (None, _) => None,
    }
}

/// Why the send role cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SendSetupError {
    #[error(
        "no secret for app {0}: the send role needs one per app to get access tokens \
         (WXPUSH_APP_SECRET, or `secret` in the WXPUSH_CONFIG file), unless they come from \
         the install's token service (token_source)"
    )]
    MissingSecret(AppId),
    #[error("WeChat client: {0}")]
    WeChat(String),
}

/// Runs the send role until `shutdown` fires; in-flight jobs finish first. An outage of
/// RabbitMQ or Redis hands the jobs in hand back and pauses the role until they answer
/// ([`crate::supervise`]); the counters cover every session.
pub async fn run(
    deps: &Deps,
    parts: SendParts,
    topology: &Topology,
    settings: &SendSettings,
    health: &Health,
    shutdown: Shutdown,
) -> Result<Arc<SendStats>, RoleError> {
    let stats = Arc::new(SendStats::default());
    supervise("send", deps, health, shutdown, |session| {
        let (parts, stats) = (parts.clone(), stats.clone());
        async move {
            let sender =
                Sender::start_counting(&session.deps, parts, topology, settings, stats).await?;
            let r = sender.consume_session(&session, None).await;
            sender.publisher.close().await;
            r.map(|_| ())
        }
    })
    .await?;
    Ok(stats)
}

impl Sender {
    /// Declares the send topology and opens the publisher for retries and dead letters.
    pub async fn start(
        deps: &Deps,
        parts: SendParts,
        topology: &Topology,
        settings: &SendSettings,
    ) -> Result<Self, RoleError> {
        Self::start_counting(deps, parts, topology, settings, Arc::default()).await
    }

    /// [`Sender::start`], counting into `stats` (which outlive a session).
    async fn start_counting(
        deps: &Deps,
        parts: SendParts,
        topology: &Topology,
        settings: &SendSettings,
        stats: Arc<SendStats>,
    ) -> Result<Self, RoleError> {
        topology.declare(&deps.broker, Needs::Send).await?;
        let publisher = Publisher::open(&deps.broker, topology.clone()).await?;
        let apps = parts.apps.iter().map(|(id, _)| id.clone()).collect();
        let (outbox, drainer) = receipts::outbox(&deps.bank, topology, apps);
        Ok(Self {
            bank: deps.bank.clone(),
            broker: deps.broker.clone(),
            parts,
            publisher,
            topology: topology.clone(),
            settings: settings.clone(),
            stats,
            stopped: Mutex::new(HashMap::new()),
            redeliveries: Redeliveries::new(&deps.bank),
            outbox,
            drainer: tokio::sync::Mutex::new(drainer),
        })
    }

    /// Consumes send jobs until `shutdown` fires (or, with `limit`, until that many jobs are
    /// settled), `concurrency` at a time.
    pub async fn consume(
        &self,
        shutdown: Shutdown,
        limit: Option<u64>,
    ) -> Result<Arc<SendStats>, RoleError> {
        let deps = Deps::from_parts(self.bank.clone(), self.broker.clone());
        self.consume_session(&Session::standalone(&deps, shutdown), limit)
            .await
    }

    /// [`Sender::consume`] as one session: ends early, with the error, when RabbitMQ or
    /// Redis fails under it (the jobs in hand go back to the queue). Every send queue (one per
    /// app of a several-app install, [`Topology::send_queues`]) has its own consumer, prefetch
    /// and `concurrency`, so jobs of one app waiting for its rate permits never hold up another's.
    async fn consume_session(
        &self,
        session: &Session,
        limit: Option<u64>,
    ) -> Result<Arc<SendStats>, RoleError> {
        let prefetch = u16::try_from(self.settings.concurrency * 2).unwrap_or(u16::MAX);
        let mut consumers = Vec::new();
        for queue in self.topology.send_queues() {
            let c = JobConsumer::start(&self.broker, &queue, prefetch, "wxpush-send").await?;
            consumers.push((queue, c, Source::Job));
        }
        // Single messages (contract 8.2): their own queue, consumer and `concurrency`.
        let queue = self.topology.messages_queue();
        let c = JobConsumer::start(&self.broker, &queue, prefetch, "wxpush-send").await?;
        consumers.push((queue, c, Source::Message));
        session.consuming();
        let settled = AtomicU64::new(0);
        let failure: Mutex<Option<RoleError>> = Mutex::new(None);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let fail = |e: RoleError| {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert(e);
            }
            let _ = done_tx.send(true);
        };
        let runs = consumers.into_iter().map(|(queue, c, source)| {
            let JobConsumer { channel, consumer } = c;
            let (mut shutdown, mut done_rx) = (session.shutdown.clone(), done_rx.clone());
            let (settled, done_tx, fail) = (&settled, &done_tx, &fail);
            async move {
                let tag = consumer.tag();
                let lost = &channel;
                let gone = || {
                    RoleError::Broker(wxpush_broker::BrokerError::ConsumerGone {
                        queue: queue.clone(),
                    })
                };
                let ended = std::sync::atomic::AtomicBool::new(false);
                let stop = async {
                    tokio::select! {
                        _ = shutdown.wait() => {}
                        _ = done_rx.wait_for(|d| *d) => {}
                        () = wxpush_broker::consume::channel_lost(lost) => fail(gone()),
                    }
                    ended.store(true, Ordering::Relaxed);
                };
                consumer
                    .take_until(stop)
                    .for_each_concurrent(self.settings.concurrency, |d| async move {
                        let failed = match d {
                            Ok(delivery) => self.handle(delivery, source).await.err(),
                            Err(e) => Some(RoleError::Amqp(e)),
                        };
                        if let Some(e) = failed {
                            // Stop taking jobs: the supervisor waits for RabbitMQ or Redis.
                            fail(e);
                            return;
                        }
                        let n = settled.fetch_add(1, Ordering::Relaxed) + 1;
                        if limit.is_some_and(|l| n >= l) {
                            let _ = done_tx.send(true);
                        }
                    })
                    .await;
                if !ended.load(Ordering::Relaxed) {
                    // The deliveries ended by themselves: the broker cancelled the consumer or
                    // its connection died (lapin may end the stream before the channel's state
                    // says so). Not a clean stop: the supervisor reconnects.
                    fail(gone());
                }
                wxpush_broker::consume::stop_consuming(&channel, tag).await;
            }
        });
        // Receipts (contract 8.3) go out beside the jobs, with the session's publisher.
        let drain = {
            let (fail, shutdown, done_rx) = (&fail, session.shutdown.clone(), done_rx.clone());
            async move {
                if let Err(e) = self.drain_receipts(shutdown, done_rx).await {
                    fail(e);
                }
            }
        };
        let all_runs = futures_util::future::join_all(runs);
        tokio::join!(all_runs, drain);
        match failure.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(self.stats.clone()),
        }
    }

    /// Publishes receipts ([`receipts::Drainer`]) until `shutdown` fires or `done` turns true.
    async fn drain_receipts(
        &self,
        shutdown: Shutdown,
        mut done: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), RoleError> {
        let mut drainer = self.drainer.lock().await;
        tokio::select! {
            r = drainer.run(&self.publisher, shutdown) => r,
            _ = done.wait_for(|d| *d) => Ok(()),
        }
    }

    /// Handles one delivery from start to acknowledgement. `Err` (the job handed back) when
    /// RabbitMQ or Redis failed under it in a way a later session may get past.
    async fn handle(&self, delivery: Delivery, source: Source) -> Result<(), RoleError> {
        SendStats::add(&self.stats.jobs);
        metrics::counter!(m::CONSUMED, "queue" => source.queue()).increment(1);
        // (A Redis error here hands the job back with the session, like any other.)
        let times = self
            .redeliveries
            .count(source.queue(), &[&delivery])
            .await?;
        if let Some(&n) = times.first().filter(|n| **n >= REDELIVERY_LIMIT) {
            let reason = redelivery::reason(n);
            // Its recipient still gets an outcome (counts add up, `campaign retry` lists it),
            // settled without a call; tried on the first few deliveries at the limit only
            // (the broker's count may step over the limit itself: it also counts returns the
            // role never saw, such as prefetched jobs handed back with a session), so that a
            // job whose settling crashes too is soon dead-lettered unread.
            if n < REDELIVERY_LIMIT + ABANDON_TRIES {
                if let Ok(valid) = source.parse(&delivery.data) {
                    match self.abandon(&valid).await {
                        Ok(Some(outcome)) => {
                            tracing::info!(outcome = %outcome.field(), "recipient of a send job dead-lettered for redeliveries settled")
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "could not settle the recipient of a send job dead-lettered for redeliveries")
                        }
                    }
                }
            }
            tracing::warn!(code = REDELIVERED, %reason, "send job dead-lettered");
            self.dead_letter_from(source, &delivery, REDELIVERED, &reason)
                .await;
            return Ok(());
        }
        let valid = match source.parse(&delivery.data) {
            Ok(v) => v,
            Err((code, text)) => {
                tracing::warn!(code, reason = %wxpush_domain::short_reason(&text), "send job dead-lettered");
                self.dead_letter_from(source, &delivery, code, &text).await;
                return Ok(());
            }
        };
        let span = tracing::info_span!(
            "job",
            campaign = %valid.job.campaign_id,
            user = %valid.open_id.masked(),
            attempt = valid.job.attempt
        );
        self.handle_valid(&delivery, &valid, source)
            .instrument(span)
            .await
    }

    async fn handle_valid(
        &self,
        delivery: &Delivery,
        valid: &ValidJob,
        source: Source,
    ) -> Result<(), RoleError> {
        let disposition = match self.process(valid).await {
            Ok(d) => d,
            Err(e) if e.is_recoverable() => {
                if matches!(e, RoleError::Bank(wxpush_bank::BankError::NotReplicated(_))) {
                    metrics::counter!(m::REDIS_NOT_REPLICATED, "role" => "send").increment(1);
                }
                tracing::debug!(error = %e, "send job handed back");
                requeue(delivery).await;
                return Err(e);
            }
            Err(e) => {
                // An error that would recur (a script error, say): hand back and slow down.
                tracing::warn!(error = %e, "send job handed back");
                requeue(delivery).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
        };
        if valid.job.receipts
            && matches!(
                disposition,
                Disposition::Done(_) | Disposition::GiveUp { .. }
            )
        {
            // Its receipt is in the outbox (written by the settle): out it goes.
            self.outbox.settled(self.app_of(valid), &valid.open_id);
        }
        let settled = match disposition {
            Disposition::Done(outcome) => {
                // Already counted by the bank's script that settled it.
                tracing::info!(%outcome, "send outcome");
                self.count(&outcome);
                Ok(())
            }
            Disposition::Superseded => {
                tracing::info!("send attempt superseded: another attempt took its lease over");
                SendStats::add(&self.stats.superseded);
                metrics::counter!(m::SEND_OUTCOMES, "outcome" => "superseded").increment(1);
                Ok(())
            }
            Disposition::Park { mut job, after } => {
                metrics::counter!(m::JOBS_PARKED).increment(1);
                // Waiting is not failing: the retry budget (`retryingSince`) moves on by the
                // time the job spends parked.
                let parked_ms = i64::from(delay_tier(after)) * 1000;
                job.retrying_since = job.retrying_since.map(|s| s.saturating_add(parked_ms));
                self.republish(self.app_of(valid), &job, after).await
            }
            Disposition::Retry {
                mut job,
                after,
                reason,
            } => {
                job.attempt = job.attempt.saturating_add(1);
                tracing::info!(next_attempt = job.attempt, %reason, "send retry scheduled");
                SendStats::add(&self.stats.retried);
                metrics::counter!(m::JOBS_RETRIED).increment(1);
                self.republish(self.app_of(valid), &job, after).await
            }
            Disposition::GiveUp { outcome, reason } => {
                tracing::warn!(%outcome, %reason, "send outcome");
                self.count(&outcome);
                self.dead_letter_from(source, delivery, "gave_up", &reason)
                    .await;
                return Ok(());
            }
            Disposition::Refuse { code, reason } => {
                tracing::warn!(code, reason = %wxpush_domain::short_reason(&reason), "send job dead-lettered");
                self.dead_letter_from(source, delivery, code, &reason).await;
                return Ok(());
            }
        };
        match settled {
            Ok(()) => {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not settle a send job; handing it back");
                requeue(delivery).await;
                Err(e)
            }
        }
    }

    /// Short waits in process for a transient failure, before the delay queues.
    fn quick_retries(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .with_max_times(self.settings.quick_retries as usize)
            .build()
    }

    /// Makes one send call to WeChat, counting it in the stats and by its errcode
    /// (`transport` when WeChat gave none) and latency in the metrics.
    async fn call_wechat(
        &self,
        api: &'static str,
        app: &AppId,
        call: impl std::future::Future<Output = Outcome>,
    ) -> Outcome {
        SendStats::add(&self.stats.wechat_calls);
        let called = std::time::Instant::now();
        let outcome = call.await;
        let code = outcome
            .errcode()
            .map_or_else(|| "transport".to_owned(), |c| c.to_string());
        metrics::counter!(m::WECHAT_CALLS, "api" => api, "app" => app.to_string(), "code" => code)
            .increment(1);
        metrics::histogram!(m::WECHAT_SECONDS, "api" => api).record(called.elapsed().as_secs_f64());
        outcome
    }

    /// The app of a job already checked to be served: the one it names, or the default.
    fn app_of<'a>(&'a self, valid: &'a ValidJob) -> &'a AppId {
        valid.app_id.as_ref().unwrap_or(self.parts.default_id())
    }

    /// Re-publishes `job` of `app` to the delay tier serving `after`, which hands it back to
    /// that app's send queue.
    async fn republish(
        &self,
        app: &AppId,
        job: &SendJob,
        after: Duration,
    ) -> Result<(), RoleError> {
        let queue = self.topology.delay_queue_for(app, delay_tier(after));
        // It comes back for the app it was resolved to now (a single message may name none),
        // whatever the default is then.
        let body = if job.app_id.is_none() {
            let mut pinned = job.clone();
            pinned.app_id = Some(app.to_string());
            pinned.to_json()
        } else {
            job.to_json()
        };
        self.publisher
            .publish("", &queue, &body, BasicProperties::default())
            .await?;
        Ok(())
    }

    /// Dead-letters a delivery of `source`'s queue to its dead-letter queue
    /// (`<ns>.dead.send` or `<ns>.dead.messages`).
    async fn dead_letter_from(
        &self,
        source: Source,
        delivery: &Delivery,
        code: &str,
        reason: &str,
    ) {
        let (dead, queue) = match source {
            Source::Job => (DEAD_LETTER_SOURCE, self.topology.send_queue()),
            Source::Message => (MESSAGES_DEAD_LETTER_SOURCE, self.topology.messages_queue()),
        };
        let sent = self
            .publisher
            .dead_letter(dead, &queue, delivery, code, reason)
            .await;
        match sent {
            Ok(()) => {
                crate::dead_letters::count(&self.bank, dead, code, reason).await;
                SendStats::add(&self.stats.dead_lettered);
                metrics::counter!(m::DEAD_LETTERED, "source" => dead, "reason" => code.to_owned())
                    .increment(1);
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not dead-letter a send job; handing it back");
                m::count_refused_dead_letter(dead, &e);
                // Not at once: a full dead-letter queue refuses the next try as well.
                tokio::time::sleep(Duration::from_secs(1)).await;
                requeue(delivery).await;
            }
        }
    }

    /// Counts a recipient's outcome in the process's stats and `/metrics` (the campaign's
    /// counters in Redis were counted by the script that settled it).
    fn count(&self, outcome: &Recorded) {
        let field = outcome.field();
        let name = match outcome {
            Recorded::Failed(_) => "failed",
            _ => field.as_str(),
        };
        metrics::counter!(m::SEND_OUTCOMES, "outcome" => name.to_owned()).increment(1);
        let s = &self.stats;
        match outcome {
            Recorded::Sent => SendStats::add(&s.sent),
            Recorded::SentUnconfirmed => SendStats::add(&s.sent_unconfirmed),
            Recorded::NoCredential => SendStats::add(&s.no_credential),
            Recorded::Duplicate(_) => SendStats::add(&s.duplicates),
            Recorded::DeadLettered => SendStats::add(&s.dead_lettered),
            Recorded::Unknown => SendStats::add(&s.unknown),
            Recorded::Stopped => {}
            Recorded::InvalidData => SendStats::add(&s.invalid_data),
            Recorded::Cancelled => SendStats::add(&s.cancelled),
            Recorded::SkippedQuietHours => SendStats::add(&s.skipped_quiet_hours),
            Recorded::Capped => SendStats::add(&s.capped),
            Recorded::Failed(code) => {
                SendStats::add(&s.failed);
                if let Ok(mut m) = s.failed_by_code.lock() {
                    *m.entry(*code).or_default() += 1;
                }
            }
        }
    }

    /// Exponential backoff for the next attempt (about 1 s, 2 s, 4 s, ... up to
    /// `WXPUSH_SEND_RETRY_MAX_DELAY`), less a random quarter at most so a fleet's retries spread
    /// out; [`Sender::republish`] rounds it up to a delay tier.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = Duration::from_secs(1u64 << attempt.min(20)).min(self.settings.max_retry_delay);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base - base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// A fencing token for one attempt: unique across processes, the owner of its lease.
fn attempt_owner() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Hands a delivery back to the queue (a failed hand-back: the channel is gone, and the
/// broker requeues it with the channel).
async fn requeue(delivery: &Delivery) {
    let _ = wxpush_broker::consume::hand_back(delivery).await;
}

/// Unix time now, in milliseconds (this process's clock: the retry budget's, which needs no
/// more precision than a few seconds).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn until_next_minute() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(60 - now.as_secs() % 60)
}
