//! The send role: send jobs from RabbitMQ to WeChat, one credential per message.
//!
//! Per job (many at once, each acknowledged on its own):
//! 1. parse it (a malformed job is dead-lettered with its reason);
//! 2. if the fleet is paused for the job's app (WeChat's daily quota, `45009`), park it in a
//!    delay queue (a job for an app this install does not serve is dead-lettered);
//! 3. claim the user's soonest-expiring credential (none: record `no_credential`, done);
//! 4. take a rate permit from the app's fleet-wide limit, get the app's shared access token;
//! 5. call WeChat and act on the classified outcome ([`wxpush_wechat::Outcome`]):
//!    - sent: record it;
//!    - bad credential (`41028`, `41029`): drop it, claim the user's next one;
//!    - bad token (`40001`, `40014`, `42001`): invalidate it (only if still the cached one),
//!      retry once at once;
//!    - transient (`-1`, timeouts, 5xx): a short retry in process, then re-publish the job,
//!      holding its credential, to a delay queue (exponential backoff) so no worker sleeps on a
//!      prefetch slot; after `max_attempts` the job is dead-lettered;
//!    - minute quota (`45011`): park the job until the next minute;
//!    - daily quota (`45009`): pause the whole fleet for the cool-down, park the job;
//!    - permanent (`40003`, `40037`, `41030`, `47003`, unknown): record the code; the
//!      credential, which WeChat did not use, goes back to the bank.
//! 6. record the outcome in the campaign's counters and log one line with the openId masked.
//!
//! A job retried after a timeout keeps its formId: if the first attempt was in fact accepted,
//! WeChat answers `41029` and the job is recorded as `sent_unconfirmed`, not sent again.
//! Subscribe-message jobs (`"kind": "subscribe"`) spend a consent instead and differ where it
//! matters: [`subscribe`]. Each app of the install has its own token, rate limit and pause
//! ([`AppFleet`]); nothing of one app is ever used for another's job.
//! This module must not parse uploads or campaigns, nor know how the bank stores credentials.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use wxpush_bank::{Bank, CampaignClaim, Settle};
use wxpush_broker::topology::delay_tier;
use wxpush_broker::topology::Needs;
use wxpush_broker::{JobConsumer, Publisher, Topology};
use wxpush_domain::{parse_job, AppId, Config, Credential, JobKind, SendJob, ValidJob};
use wxpush_fleet::{
    FleetPause, PauseSettings, RateLimiter, RateSettings, TokenSettings, TokenStore,
};
use wxpush_wechat::{Client, ClientConfig, Outcome, TemplateMessage};

use tracing::Instrument;

use crate::metrics as m;
use crate::outcomes::Recorded;
use crate::redelivery::{self, Redeliveries, REDELIVERED, REDELIVERY_LIMIT};
use crate::{supervise, Deps, Health, RoleError, Session, Shutdown};

mod subscribe;

/// The source name of the send role's dead letters (queue `<ns>.dead.send`).
pub const DEAD_LETTER_SOURCE: &str = "send";

/// Tunables of the send role.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Jobs one process handles at once (and twice that many prefetched).
    pub concurrency: usize,
    /// Attempts (first try included) before a job is dead-lettered.
    pub max_attempts: u32,
    /// Quick retries inside one attempt, for a transient failure.
    pub quick_retries: u32,
    /// How long the fleet stops sending after WeChat's daily quota answer (`45009`).
    pub quota_cooldown: Duration,
    /// Credentials WeChat may refuse (`41028`/`41029`) for one job before it gives up.
    pub max_credentials_per_job: u32,
}

impl SendSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            concurrency: c.send_concurrency,
            max_attempts: c.send_max_attempts,
            quick_retries: 2,
            quota_cooldown: Duration::from_secs(c.quota_cooldown_secs),
            max_credentials_per_job: 10,
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
    /// Park it (no attempt counted): the fleet is paused, the minute quota is spent, or
    /// another attempt at the same campaign and user is in flight.
    Park { job: SendJob, after: Duration },
    /// Attempts exhausted: dead-letter it with this reason.
    GiveUp { reason: String },
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
    stopped: Mutex<HashMap<String, (std::time::Instant, bool)>>,
    redeliveries: Redeliveries,
}

/// One app's share of the fleet's state, all of it kept in Redis under the app's own keys:
/// its access token, its send ceiling and its daily-quota pause.
#[derive(Clone)]
pub struct AppFleet {
    pub tokens: TokenStore,
    pub limiter: RateLimiter,
    pub pause: FleetPause,
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
            let mut sender = Sender::start(&session.deps, parts, topology, settings).await?;
            sender.stats = stats;
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
        topology.declare(&deps.broker, Needs::Send).await?;
        let publisher = Publisher::open(&deps.broker, topology.clone()).await?;
        Ok(Self {
            bank: deps.bank.clone(),
            broker: deps.broker.clone(),
            parts,
            publisher,
            topology: topology.clone(),
            settings: settings.clone(),
            stats: Arc::new(SendStats::default()),
            stopped: Mutex::new(HashMap::new()),
            redeliveries: Redeliveries::new(&deps.bank),
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
            consumers.push((queue, c));
        }
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
        let runs = consumers.into_iter().map(|(queue, c)| {
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
                            Ok(delivery) => self.handle(delivery).await.err(),
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
        futures_util::future::join_all(runs).await;
        match failure.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(self.stats.clone()),
        }
    }

    /// Handles one delivery from start to acknowledgement. `Err` (the job handed back) when
    /// RabbitMQ or Redis failed under it in a way a later session may get past.
    async fn handle(&self, delivery: Delivery) -> Result<(), RoleError> {
        SendStats::add(&self.stats.jobs);
        metrics::counter!(m::CONSUMED, "queue" => "send").increment(1);
        // (A Redis error here hands the job back with the session, like any other.)
        let times = self.redeliveries.count("send", &[&delivery]).await?;
        if let Some(&n) = times.first().filter(|n| **n >= REDELIVERY_LIMIT) {
            let reason = redelivery::reason(n);
            tracing::warn!(code = REDELIVERED, %reason, "send job dead-lettered");
            self.dead_letter(&delivery, REDELIVERED, &reason).await;
            return Ok(());
        }
        let valid = match parse_job(&delivery.data) {
            Ok(v) => v,
            Err(e) => {
                let text = e.to_string();
                tracing::warn!(code = e.code(), reason = %wxpush_domain::short_reason(&text), "send job dead-lettered");
                self.dead_letter(&delivery, e.code(), &e.to_string()).await;
                return Ok(());
            }
        };
        let span = tracing::info_span!(
            "job",
            campaign = %valid.job.campaign_id,
            user = %valid.open_id.masked(),
            attempt = valid.job.attempt
        );
        self.handle_valid(&delivery, &valid).instrument(span).await
    }

    async fn handle_valid(&self, delivery: &Delivery, valid: &ValidJob) -> Result<(), RoleError> {
        let disposition = match self.process(valid).await {
            Ok(d) => d,
            Err(e) if e.is_recoverable() => {
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
        let settled = match disposition {
            Disposition::Done(outcome) => {
                // Already counted by the bank's script that settled it.
                tracing::info!(%outcome, "send outcome");
                self.count(&outcome.field());
                Ok(())
            }
            Disposition::Park { job, after } => {
                metrics::counter!(m::JOBS_PARKED).increment(1);
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
            Disposition::GiveUp { reason } => {
                tracing::warn!(%reason, "send outcome");
                self.dead_letter(delivery, "gave_up", &reason).await;
                return Ok(());
            }
            Disposition::Refuse { code, reason } => {
                tracing::warn!(code, reason = %wxpush_domain::short_reason(&reason), "send job dead-lettered");
                self.dead_letter(delivery, code, &reason).await;
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

    /// Claims (or resumes) the campaign's credential for this user, sends, and classifies,
    /// until the job is done or must wait.
    async fn process(&self, valid: &ValidJob) -> Result<Disposition, RoleError> {
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
        let campaign = job.campaign_id.as_str();
        if let Some(wait) = fleet.pause.paused_for().await {
            return Ok(Disposition::Park {
                job: job.clone(),
                after: wait,
            });
        }
        let owner = attempt_owner();
        if job.kind == JobKind::Subscribe {
            return self.process_subscribe(valid, app, fleet, &owner).await;
        }
        let claim = self
            .bank
            .campaign_claim(app, &valid.open_id, campaign, &owner, CAMPAIGN_LEASE, false)
            .await?;
        let (mut credential, mut in_doubt) = match claimed(claim, job) {
            Claimed::Holds(credential, in_doubt) => (credential, in_doubt),
            Claimed::Ends(done) => return Ok(*done),
        };
        let mut refused = 0;
        let mut quick = self.quick_retries();
        let mut token_refreshed = false;
        loop {
            fleet.limiter.acquire().await?;
            let token = match fleet.tokens.get().await {
                Ok(t) => t,
                Err(e) => {
                    let release = Settle::Release {
                        in_doubt,
                        retry: true,
                    };
                    self.settle(valid, &owner, release).await?;
                    let reason = format!("no access token: {e}");
                    return self.retry(valid, &credential, in_doubt, reason).await;
                }
            };
            let message = TemplateMessage {
                touser: valid.open_id.clone(),
                template_id: job.template_id.clone(),
                page: job.page.clone(),
                form_id: credential.value.clone(),
                data: job.data.clone(),
                emphasis_keyword: job.emphasis_keyword.clone(),
            };
            let send = self.parts.wechat.send_template(token.expose(), &message);
            let outcome = self.call_wechat("template", app, send).await;
            match outcome {
                Outcome::Sent { .. } => {
                    self.settle(valid, &owner, Settle::Final("sent")).await?;
                    return Ok(Disposition::Done(Recorded::Sent));
                }
                Outcome::BadCredential { code } if code == 41029 && in_doubt => {
                    // An earlier attempt with this formId, whose outcome was unknown, had
                    // been accepted.
                    self.settle(valid, &owner, Settle::Final("sent_unconfirmed"))
                        .await?;
                    return Ok(Disposition::Done(Recorded::SentUnconfirmed));
                }
                Outcome::BadCredential { code } => {
                    SendStats::add(&self.stats.credentials_dropped);
                    refused += 1;
                    if refused >= self.settings.max_credentials_per_job {
                        let outcome = Recorded::Failed(code);
                        self.settle(valid, &owner, Settle::Final(&outcome.field()))
                            .await?;
                        return Ok(Disposition::Done(outcome));
                    }
                    let next = self
                        .bank
                        .campaign_claim(app, &valid.open_id, campaign, &owner, CAMPAIGN_LEASE, true)
                        .await?;
                    match next {
                        CampaignClaim::Fresh(c) | CampaignClaim::Held { credential: c, .. } => {
                            credential = c;
                            in_doubt = false;
                        }
                        CampaignClaim::NoCredential => {
                            return Ok(Disposition::Done(Recorded::NoCredential))
                        }
                        CampaignClaim::Done(outcome) => {
                            return Ok(Disposition::Done(Recorded::Duplicate(outcome)))
                        }
                        CampaignClaim::Busy(left) => {
                            return Ok(Disposition::Park {
                                job: job.clone(),
                                after: left.clamp(Duration::from_secs(1), BUSY_RECHECK),
                            })
                        }
                    }
                }
                Outcome::BadToken { .. } if !token_refreshed => {
                    if let Err(e) = fleet.tokens.invalidate(&token).await {
                        tracing::warn!(error = %e, "could not invalidate the access token");
                    }
                    token_refreshed = true;
                }
                Outcome::BadToken { code } => {
                    let release = Settle::Release {
                        in_doubt,
                        retry: true,
                    };
                    self.settle(valid, &owner, release).await?;
                    let reason = format!("access token refused twice ({code})");
                    return self.retry(valid, &credential, in_doubt, reason).await;
                }
                Outcome::Transient {
                    ambiguous, reason, ..
                } => {
                    in_doubt = in_doubt || ambiguous;
                    if let Some(wait) = quick.next() {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    let release = Settle::Release {
                        in_doubt,
                        retry: true,
                    };
                    self.settle(valid, &owner, release).await?;
                    return self.retry(valid, &credential, in_doubt, reason).await;
                }
                Outcome::MinuteQuota => {
                    return self
                        .park(valid, &owner, in_doubt, until_next_minute())
                        .await;
                }
                Outcome::QuotaExhausted => {
                    tracing::warn!(cooldown = ?self.settings.quota_cooldown, "WeChat daily quota reached (45009): pausing the fleet");
                    fleet.pause.pause_for(self.settings.quota_cooldown).await?;
                    return self
                        .park(valid, &owner, in_doubt, self.settings.quota_cooldown)
                        .await;
                }
                Outcome::NoConsent => {
                    let outcome = Recorded::Failed(43101);
                    self.settle(valid, &owner, Settle::Final(&outcome.field()))
                        .await?;
                    return Ok(Disposition::Done(outcome));
                }
                Outcome::Permanent { code, .. } => {
                    self.settle(
                        valid,
                        &owner,
                        Settle::Final(&Recorded::Failed(code).field()),
                    )
                    .await?;
                    if !in_doubt {
                        self.release(valid, &credential).await;
                    }
                    return Ok(Disposition::Done(Recorded::Failed(code)));
                }
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

    /// Ends this attempt without an outcome, keeping the credential, and parks the job.
    async fn park(
        &self,
        valid: &ValidJob,
        owner: &str,
        in_doubt: bool,
        after: Duration,
    ) -> Result<Disposition, RoleError> {
        let release = Settle::Release {
            in_doubt,
            retry: false,
        };
        self.settle(valid, owner, release).await?;
        Ok(Disposition::Park {
            job: valid.job.clone(),
            after,
        })
    }

    /// Ends this attempt at the job's campaign and user.
    async fn settle(
        &self,
        valid: &ValidJob,
        owner: &str,
        how: Settle<'_>,
    ) -> Result<bool, wxpush_bank::BankError> {
        let app = self.app_of(valid);
        self.bank
            .campaign_settle(app, &valid.open_id, &valid.job.campaign_id, owner, how)
            .await
    }

    /// The next attempt of a job, or, after `max_attempts`, giving up: the campaign is then
    /// failed for this user and the credential goes back to the bank unless WeChat may have
    /// used it.
    async fn retry(
        &self,
        valid: &ValidJob,
        credential: &Credential,
        in_doubt: bool,
        reason: String,
    ) -> Result<Disposition, RoleError> {
        let job = &valid.job;
        if job.attempt + 1 < self.settings.max_attempts {
            return Ok(Disposition::Retry {
                job: job.clone(),
                after: backoff(job.attempt),
                reason,
            });
        }
        let app = self.app_of(valid);
        let owner = attempt_owner();
        let campaign = job.campaign_id.as_str();
        // Take the lease back (it was just released) to settle the campaign as failed.
        let held = self
            .bank
            .campaign_claim(app, &valid.open_id, campaign, &owner, CAMPAIGN_LEASE, false)
            .await?;
        if let CampaignClaim::Held { .. } = held {
            let outcome = Recorded::DeadLettered.field();
            self.bank
                .campaign_settle(
                    app,
                    &valid.open_id,
                    campaign,
                    &owner,
                    Settle::Final(&outcome),
                )
                .await?;
            if !in_doubt {
                self.release(valid, credential).await;
            }
        }
        Ok(Disposition::GiveUp {
            reason: format!("gave up after {} attempts: {reason}", job.attempt + 1),
        })
    }

    /// The app of a job already checked to be served: the one it names, or the default.
    fn app_of<'a>(&'a self, valid: &'a ValidJob) -> &'a AppId {
        valid.app_id.as_ref().unwrap_or(self.parts.default_id())
    }

    async fn release(&self, valid: &ValidJob, credential: &Credential) {
        let app = self.app_of(valid);
        match self.bank.release(app, &valid.open_id, credential).await {
            Ok(true) => SendStats::add(&self.stats.credentials_released),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not give a credential back"),
        }
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
        self.publisher
            .publish("", &queue, &job.to_json(), BasicProperties::default())
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, code: &str, reason: &str) {
        let sent = self
            .publisher
            .dead_letter(
                DEAD_LETTER_SOURCE,
                &self.topology.send_queue(),
                delivery,
                code,
                reason,
            )
            .await;
        match sent {
            Ok(()) => {
                SendStats::add(&self.stats.dead_lettered);
                metrics::counter!(m::DEAD_LETTERED, "source" => DEAD_LETTER_SOURCE, "reason" => code.to_owned())
                    .increment(1);
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not dead-letter a send job; handing it back");
                m::count_refused_dead_letter(DEAD_LETTER_SOURCE, &e);
                // Not at once: a full dead-letter queue refuses the next try as well.
                tokio::time::sleep(Duration::from_secs(1)).await;
                requeue(delivery).await;
            }
        }
    }

    fn count(&self, field: &str) {
        let outcome = field.split(':').next().unwrap_or(field).to_owned();
        metrics::counter!(m::SEND_OUTCOMES, "outcome" => outcome).increment(1);
        let s = &self.stats;
        match field {
            "sent" => SendStats::add(&s.sent),
            "sent_unconfirmed" => SendStats::add(&s.sent_unconfirmed),
            "no_credential" => SendStats::add(&s.no_credential),
            "duplicate" => SendStats::add(&s.duplicates),
            "dead_lettered" => SendStats::add(&s.dead_lettered),
            other => {
                if let Some(code) = other.strip_prefix("failed:").and_then(|c| c.parse().ok()) {
                    SendStats::add(&s.failed);
                    if let Ok(mut m) = s.failed_by_code.lock() {
                        *m.entry(code).or_default() += 1;
                    }
                }
            }
        }
    }
}

/// How long one attempt holds a user's campaign credential before another may take over:
/// longer than an attempt can take (WeChat's timeout and the quick retries).
const CAMPAIGN_LEASE: Duration = Duration::from_secs(20);

/// How long a job waits before looking again at a lease another attempt holds.
const BUSY_RECHECK: Duration = Duration::from_secs(5);

/// A name for one attempt, unique across processes.
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

/// The label of a claim's result, for [`m::CLAIMS`].
/// What a campaign claim (of either kind) gives a job.
enum Claimed {
    /// A credential to send with, and whether an earlier attempt may already have used it.
    Holds(Credential, bool),
    /// No credential: the job ends (a duplicate, nobody to reach) or waits (a busy user).
    Ends(Box<Disposition>),
}

/// Counts a campaign claim and says what it gives the job.
fn claimed(claim: CampaignClaim, job: &SendJob) -> Claimed {
    metrics::counter!(m::CLAIMS, "result" => claim_result(&claim)).increment(1);
    match claim {
        CampaignClaim::Done(outcome) => {
            Claimed::Ends(Box::new(Disposition::Done(Recorded::Duplicate(outcome))))
        }
        CampaignClaim::Busy(left) => Claimed::Ends(Box::new(Disposition::Park {
            job: job.clone(),
            after: left.clamp(Duration::from_secs(1), BUSY_RECHECK),
        })),
        CampaignClaim::NoCredential => {
            Claimed::Ends(Box::new(Disposition::Done(Recorded::NoCredential)))
        }
        CampaignClaim::Fresh(c) => Claimed::Holds(c, false),
        CampaignClaim::Held {
            credential,
            in_doubt,
        } => Claimed::Holds(credential, in_doubt),
    }
}

fn claim_result(c: &CampaignClaim) -> &'static str {
    match c {
        CampaignClaim::Fresh(_) => "fresh",
        CampaignClaim::Held { .. } => "held",
        CampaignClaim::Busy(_) => "busy",
        CampaignClaim::NoCredential => "no_credential",
        CampaignClaim::Done(_) => "done",
    }
}

/// Hands a delivery back to the queue.
async fn requeue(delivery: &Delivery) {
    let _ = delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

/// Exponential backoff for the next attempt (about 1 s, 2 s, 4 s, ... up to 15 min), less a
/// random quarter at most so a fleet's retries spread out; the caller rounds it up to a delay
/// tier.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(10)).min(Duration::from_secs(900));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base - base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

fn until_next_minute() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(60 - now.as_secs() % 60)
}
