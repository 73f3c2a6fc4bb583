//! The ingest role: credential uploads from RabbitMQ into the bank.
//!
//! Per batch (as many uploads as are ready, up to `batch_max`):
//! 1. parse and validate every upload ([`wxpush_domain::parse_upload`]) at Redis's time (read
//!    with `TIME` at most once a second, carried forward by the monotonic clock meanwhile:
//!    never this host's wall clock), and drop the consents for templates its app does not list
//!    (`templates` in `WXPUSH_CONFIG`), counted as `unknown_template`, and every consent of an
//!    app whose consents come from WeChat's events (`consent_source = "events"`, contract
//!    §8.4), counted as `consent_ignored`;
//! 2. dead-letter each poison message with its reason (confirmed before going on);
//! 3. store every good upload's credentials in one pipelined Redis round trip, retrying
//!    for up to 5 s (`REDIS_HOLD`) while Redis is unreachable and holding the batch
//!    meanwhile; a longer outage ends the session (the batch goes back to the queue) and the
//!    supervisor waits for Redis ([`crate::supervise`]). The store script clamps every expiry
//!    to Redis's now + 7 days and drops what Redis's clock says has expired. With
//!    `WXPUSH_REDIS_WAIT_REPLICAS`, a write the replicas have not acknowledged is held the
//!    same way, waiting for them (`WAIT`) rather than writing again;
//! 4. acknowledge the whole batch with one `multiple` ack as soon as its write ends, whether
//!    or not another batch has come meanwhile (a failed write ends the session at once).
//!
//! A message is acknowledged only after its credentials are in Redis (or it is in the
//! dead-letter queue), so a crash at any moment loses nothing; the redelivered messages are
//! stored again, which changes nothing because storing formIds and prepayIds is idempotent
//! (subscribe consents accumulate, so a redelivered upload's consents count twice, up to the
//! bank's caps; the bank's docs say why that is the safe side). This module must not know how the bank lays out its
//! keys, nor talk to WeChat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use wxpush_bank::{Applied, Bank, BankError, StoreReport, StoreRequest};
use wxpush_broker::topology::Needs;
use wxpush_broker::{Batch, BatchConsumer, Broker, Delivery, Publisher, Topology};
use wxpush_domain::{
    parse_upload, AppId, Apps, Config, ConsentSource, Credential, OpenId, PoisonReason,
    UploadLimits,
};

use crate::metrics as m;
use crate::redelivery::{Redeliveries, REDELIVERY_LIMIT};
use crate::{supervise, Deps, Health, RoleError, Shutdown};

/// The source name of ingest's dead letters (queue `<ns>.dead.ingest`).
pub const DEAD_LETTER_SOURCE: &str = "ingest";

/// What the ingest role needs from the configuration.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The apps served: an upload naming another is dead-lettered (`unknown_app`).
    pub apps: Apps,
    pub limits: UploadLimits,
    /// Unacknowledged uploads held: `WXPUSH_INGEST_PREFETCH`, cut so that as many uploads of
    /// the largest size allowed fit in `WXPUSH_INGEST_BUFFER_BYTES` ([`IngestSettings::from_config`]).
    pub prefetch: u16,
    /// Most uploads in one batch (one Redis round trip).
    pub batch_max: usize,
    /// Most bytes of upload bodies in one batch: half the buffer, so the batch being written
    /// and the one being parsed fit in it together.
    pub batch_bytes: usize,
}

impl IngestSettings {
    /// The settings, bounded by bytes as well as counts: RabbitMQ's prefetch is a count, so
    /// the count is cut to what the byte budget holds at the largest upload allowed.
    pub fn from_config(c: &Config) -> Self {
        let fits = c.ingest_buffer_bytes / c.upload_limits.max_bytes.max(1);
        let prefetch = c
            .ingest_prefetch
            .min(u16::try_from(fits).unwrap_or(u16::MAX))
            .max(1);
        Self {
            apps: c.apps.clone(),
            limits: c.upload_limits,
            prefetch,
            batch_max: c.ingest_batch.min(usize::from(prefetch)).max(1),
            batch_bytes: (c.ingest_buffer_bytes / 2).max(1),
        }
    }
}

/// Counters of one ingest run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Upload messages taken from the queue and settled.
    pub messages: u64,
    pub batches: u64,
    /// What the bank did with the credentials of good uploads.
    pub store: StoreReport,
    /// Entries refused inside otherwise good uploads.
    pub rejected_entries: u64,
    /// Entries already expired when received (not stored).
    pub expired_on_arrival: u64,
    /// Subscribe consents dropped because their app lists its `templates` and theirs is not
    /// one of them (not stored).
    pub unknown_template: u64,
    /// Subscribe consents ignored because their app takes its consents from WeChat's events
    /// (`consent_source = "events"`, contract §8.4; not stored).
    pub consents_ignored: u64,
    /// Poison messages sent to the dead-letter queue, by reason code.
    pub dead_lettered: HashMap<&'static str, u64>,
}

impl IngestStats {
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.values().sum()
    }

    /// Adds another session's counters to these.
    pub fn merge(&mut self, o: IngestStats) {
        self.messages += o.messages;
        self.batches += o.batches;
        self.store += o.store;
        self.rejected_entries += o.rejected_entries;
        self.expired_on_arrival += o.expired_on_arrival;
        self.unknown_template += o.unknown_template;
        self.consents_ignored += o.consents_ignored;
        for (code, n) in o.dead_lettered {
            *self.dead_lettered.entry(code).or_default() += n;
        }
    }
}

/// How long a batch is held while Redis does not answer before it goes back to the queue
/// and the role stops consuming until Redis is back.
const REDIS_HOLD: Duration = Duration::from_secs(5);

/// Runs ingest until `shutdown` fires, then settles the batches in hand and returns. An
/// outage of RabbitMQ or Redis pauses it ([`crate::supervise`]); the counters cover every
/// session.
pub async fn run(
    deps: &Deps,
    topology: &Topology,
    settings: &IngestSettings,
    health: &Health,
    shutdown: Shutdown,
) -> Result<IngestStats, RoleError> {
    let total = std::sync::Mutex::new(IngestStats::default());
    tracing::info!(
        prefetch = settings.prefetch,
        batch = settings.batch_max,
        batch_bytes = settings.batch_bytes,
        "ingest holds at most {} uploads of up to {} bytes (WXPUSH_INGEST_PREFETCH, \
         WXPUSH_INGEST_BUFFER_BYTES)",
        settings.prefetch,
        settings.limits.max_bytes
    );
    supervise("ingest", deps, health, shutdown, |session| {
        let total = &total;
        async move {
            let ingest = Ingest::start(&session.deps, topology, settings).await?;
            let mut stats = IngestStats::default();
            let r = ingest
                .consume_into(&session.shutdown, None, &mut stats, &|| session.consuming())
                .await;
            ingest.publisher.close().await;
            if let Ok(mut t) = total.lock() {
                t.merge(stats);
            }
            r
        }
    })
    .await?;
    let stats = total.into_inner().unwrap_or_default();
    tracing::info!(
        messages = stats.messages,
        stored = stats.store.added,
        dead_lettered = stats.dead_lettered_total(),
        "ingest stopped"
    );
    Ok(stats)
}

/// What a batch's write ends with: the reports, `None` if shutdown came first, or the error.
type WriteResult = Result<Option<Vec<StoreReport>>, BankError>;

/// A batch whose credentials are being written to Redis while the next one is read.
struct InFlight {
    batch: Batch,
    write: tokio::task::JoinHandle<WriteResult>,
    rejected_entries: u64,
    expired_on_arrival: u64,
    capped: u64,
    unknown_template: u64,
    consents_ignored: u64,
}

/// The ingest role's working parts, exposed so tests can drive one step at a time.
pub struct Ingest {
    bank: Bank,
    broker: Broker,
    publisher: Publisher,
    topology: Topology,
    settings: IngestSettings,
    redeliveries: Redeliveries,
    clock: RedisClock,
}

/// Redis's clock as ingest reads it: `TIME` at most once per [`RedisClock::REREAD`], carried
/// forward meanwhile by this host's monotonic clock (which no wall-clock skew or step moves).
#[derive(Default)]
struct RedisClock {
    /// Redis's time (Unix ms) when last read, and when (here) that was.
    read: Mutex<Option<(i64, Instant)>>,
}

impl RedisClock {
    const REREAD: Duration = Duration::from_secs(1);

    /// Redis's time now. When Redis cannot be asked (an outage, which the store then holds
    /// the batch through), the last reading carried forward serves: the store script judges
    /// by Redis's own clock again anyway. Only a first reading must come from Redis.
    async fn now_ms(&self, bank: &Bank) -> Result<i64, BankError> {
        let last = *self.read.lock().unwrap_or_else(|p| p.into_inner());
        let carried = last.map(|(at, when)| at + when.elapsed().as_millis() as i64);
        if last.is_some_and(|(_, w)| w.elapsed() < Self::REREAD) {
            return carried.ok_or_else(|| BankError::Protocol("no clock reading".into()));
        }
        // Not held up by an outage when a carried reading can serve.
        let limit = if carried.is_some() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        match tokio::time::timeout(limit, bank.now_ms()).await {
            Ok(Ok(now)) => {
                *self.read.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, Instant::now()));
                Ok(now)
            }
            Ok(Err(e)) => carried.ok_or(e),
            Err(_) => carried.ok_or_else(|| {
                BankError::Connect(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer to TIME within 10s",
                )))
            }),
        }
    }
}

/// The parsed part of a batch: good uploads grouped per user, poison messages apart.
struct Sorted<'a> {
    users: HashMap<(AppId, OpenId), Vec<Credential>>,
    poison: Vec<(&'a Delivery, PoisonReason)>,
    rejected_entries: u64,
    expired_on_arrival: u64,
    /// Credentials dropped before the bank because more came for one user than its cap keeps.
    capped: u64,
    /// Consents dropped before the bank: their template is not one of their app's `templates`.
    unknown_template: u64,
    /// Consents dropped before the bank: their app's consents come from WeChat's events.
    consents_ignored: u64,
}

impl Ingest {
    /// Declares ingest's topology and opens its dead-letter publisher.
    pub async fn start(
        deps: &Deps,
        topology: &Topology,
        settings: &IngestSettings,
    ) -> Result<Self, RoleError> {
        topology.declare(&deps.broker, Needs::Ingest).await?;
        let publisher = Publisher::open(&deps.broker, topology.clone()).await?;
        Ok(Self {
            bank: deps.bank.clone(),
            broker: deps.broker.clone(),
            publisher,
            topology: topology.clone(),
            settings: settings.clone(),
            redeliveries: Redeliveries::new(&deps.bank),
            clock: RedisClock::default(),
        })
    }

    /// Starts consuming the ingest queue.
    pub async fn consumer(&self) -> Result<BatchConsumer, RoleError> {
        Ok(BatchConsumer::start(
            &self.broker,
            &self.topology.ingest_queue(),
            self.settings.prefetch,
            "wxpush-ingest",
        )
        .await?)
    }

    /// Consumes until `shutdown` fires (or, with `limit`, once that many messages are
    /// settled). The Redis write of one batch overlaps the reading and parsing of the next;
    /// batches are acknowledged strictly in order, each only after its write succeeded.
    pub async fn consume(
        &self,
        shutdown: Shutdown,
        limit: Option<u64>,
    ) -> Result<IngestStats, RoleError> {
        let mut stats = IngestStats::default();
        self.consume_into(&shutdown, limit, &mut stats, &|| ())
            .await
            .map(|()| stats)
    }

    /// [`Ingest::consume`], counting into `stats` (kept on error too) and calling `consuming`
    /// once the consumer is started.
    async fn consume_into(
        &self,
        shutdown: &Shutdown,
        limit: Option<u64>,
        stats: &mut IngestStats,
        consuming: &(dyn Fn() + Sync),
    ) -> Result<(), RoleError> {
        let mut shutdown = shutdown.clone();
        let mut consumer = self.consumer().await?;
        consuming();
        let mut in_flight: Option<InFlight> = None;
        let mut report = Instant::now();
        let mut reported = 0u64;
        let outcome = loop {
            let pending = in_flight.as_ref().map_or(0, |f| f.batch.len() as u64);
            if limit.is_some_and(|l| stats.messages + pending >= l) {
                break Ok(());
            }
            let next = tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                // A batch whose write ends while no other batch comes is settled at once: a
                // failed write must end the session now, not when the next upload arrives.
                written = written(&mut in_flight), if in_flight.is_some() => {
                    let Some(f) = in_flight.take() else { continue };
                    match self.settle(f, written, stats).await {
                        Ok(true) => continue,
                        Ok(false) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
                b = consumer.next_batch(self.settings.batch_max, self.settings.batch_bytes) => b,
            };
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) => {
                    break Err(wxpush_broker::BrokerError::ConsumerGone {
                        queue: self.topology.ingest_queue(),
                    }
                    .into())
                }
                Err(e) => break Err(e.into()),
            };
            let all: Vec<&Delivery> = batch.deliveries.iter().collect();
            let times = match self.redeliveries.count("ingest", &all).await {
                Ok(t) => t,
                Err(e) => break Err(e),
            };
            drop(all);
            let received_at_ms = match self.clock.now_ms(&self.bank).await {
                Ok(t) => t,
                Err(e) => break Err(e.into()),
            };
            let Sorted {
                users,
                poison,
                rejected_entries,
                expired_on_arrival,
                capped,
                unknown_template,
                consents_ignored,
            } = self.sort(&batch, &times, received_at_ms);
            metrics::counter!(m::CONSUMED, "queue" => "ingest").increment(batch.len() as u64);
            if let Err(e) = self.dead_letter_poison(&poison, stats).await {
                break Err(e);
            }
            drop(poison);
            // Read and dead-lettered: the bodies are not needed to settle the batch.
            let mut batch = batch;
            batch.forget_bodies();
            let owned: Vec<_> = users.into_iter().collect();
            let (bank, stop) = (self.bank.clone(), shutdown.clone());
            let write = tokio::spawn(async move { store_with_retry(&bank, &owned, stop).await });
            let next = InFlight {
                batch,
                write,
                rejected_entries,
                expired_on_arrival,
                capped,
                unknown_template,
                consents_ignored,
            };
            if let Some(prev) = in_flight.replace(next) {
                match self.finish(prev, stats).await {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            if report.elapsed() >= Duration::from_secs(10) {
                tracing::info!(
                    uploads = stats.messages - reported,
                    stored = stats.store.added,
                    dead_lettered = stats.dead_lettered_total(),
                    "ingest progress"
                );
                report = Instant::now();
                reported = stats.messages;
            }
        };
        if let Some(last) = in_flight.take() {
            if outcome.is_ok() {
                // Settle what is in hand; on error it goes back to the queue with the channel.
                let _ = self.finish(last, stats).await;
            } else {
                // An earlier batch was not stored: acknowledging this one (a `multiple` ack)
                // would acknowledge that one too. Both go back to the queue with the channel;
                // storing again is idempotent.
                let _ = last.write.await;
            }
        }
        let _ = consumer.cancel().await;
        consumer.close().await;
        outcome
    }

    /// Waits for a batch's write and acknowledges it; `false` when shutdown came first (the
    /// batch is handed back to the queue).
    async fn finish(&self, mut f: InFlight, stats: &mut IngestStats) -> Result<bool, RoleError> {
        let written = (&mut f.write).await;
        self.settle(f, written, stats).await
    }

    /// Acknowledges a batch whose write ended with `written`, or hands it back.
    async fn settle(
        &self,
        f: InFlight,
        written: Result<WriteResult, tokio::task::JoinError>,
        stats: &mut IngestStats,
    ) -> Result<bool, RoleError> {
        let written = match written {
            Ok(r) => r.map_err(store_failure)?,
            Err(join) => {
                // Not shutdown: the batch goes back to the queue with the channel.
                tracing::error!(error = %join, "a Redis write task failed");
                return Err(RoleError::Bank(BankError::Protocol(format!(
                    "a Redis write task failed: {join}"
                ))));
            }
        };
        let Some(reports) = written else {
            f.batch.nack(true).await?;
            return Ok(false);
        };
        f.batch.ack().await?;
        metrics::counter!(m::REJECTED, "reason" => "bad_entry").increment(f.rejected_entries);
        for r in reports {
            count_stored(&r);
            stats.store += r;
        }
        count_capped(f.capped);
        count_unknown_template(f.unknown_template);
        count_consents_ignored(f.consents_ignored);
        // Last, so that a scrape counting the uploads stored sees what became of their entries.
        metrics::counter!(m::UPLOADS_STORED).increment(f.batch.len() as u64);
        stats.store.capped += f.capped;
        stats.unknown_template += f.unknown_template;
        stats.consents_ignored += f.consents_ignored;
        stats.rejected_entries += f.rejected_entries;
        stats.expired_on_arrival += f.expired_on_arrival;
        stats.messages += f.batch.len() as u64;
        stats.batches += 1;
        Ok(true)
    }

    /// Everything but the acknowledgement: dead-letters poison, stores the rest. Returns
    /// `false` if shutdown fired before Redis could be reached (nothing acknowledged).
    pub async fn process(
        &self,
        batch: &Batch,
        stats: &mut IngestStats,
        shutdown: &mut Shutdown,
    ) -> Result<bool, RoleError> {
        let all: Vec<&Delivery> = batch.deliveries.iter().collect();
        let times = self.redeliveries.count("ingest", &all).await?;
        let received_at_ms = self.clock.now_ms(&self.bank).await?;
        let sorted = self.sort(batch, &times, received_at_ms);
        self.dead_letter_poison(&sorted.poison, stats).await?;
        let owned: Vec<_> = sorted.users.into_iter().collect();
        let Some(reports) = store_with_retry(&self.bank, &owned, shutdown.clone())
            .await
            .map_err(store_failure)?
        else {
            return Ok(false);
        };
        for r in reports {
            stats.store += r;
        }
        stats.store.capped += sorted.capped;
        stats.unknown_template += sorted.unknown_template;
        stats.consents_ignored += sorted.consents_ignored;
        stats.rejected_entries += sorted.rejected_entries;
        stats.expired_on_arrival += sorted.expired_on_arrival;
        Ok(true)
    }

    async fn dead_letter_poison(
        &self,
        poison: &[(&Delivery, PoisonReason)],
        stats: &mut IngestStats,
    ) -> Result<(), RoleError> {
        for (delivery, reason) in poison {
            let text = reason.to_string();
            let short = wxpush_domain::short_reason(&text);
            tracing::warn!(code = reason.code(), reason = %short, "upload dead-lettered");
            self.publisher
                .dead_letter(
                    DEAD_LETTER_SOURCE,
                    &self.topology.ingest_queue(),
                    delivery,
                    reason.code(),
                    &short,
                )
                .await
                .inspect_err(|e| m::count_refused_dead_letter(DEAD_LETTER_SOURCE, e))?;
            crate::dead_letters::count(&self.bank, DEAD_LETTER_SOURCE, reason.code(), &short).await;
            *stats.dead_lettered.entry(reason.code()).or_default() += 1;
            metrics::counter!(m::DEAD_LETTERED, "source" => DEAD_LETTER_SOURCE, "reason" => reason.code())
                .increment(1);
        }
        Ok(())
    }

    /// Parses a batch; `times` is how many times each delivery has come (one that came too
    /// often is dead-lettered unread, [`crate::redelivery`]), at `received_at_ms` (Redis's
    /// time: the store script clamps and drops by Redis's time again, so this only decides
    /// what is plainly expired already).
    fn sort<'a>(&self, batch: &'a Batch, times: &[u32], received_at_ms: i64) -> Sorted<'a> {
        let mut sorted = Sorted {
            users: HashMap::new(),
            poison: Vec::new(),
            rejected_entries: 0,
            expired_on_arrival: 0,
            capped: 0,
            unknown_template: 0,
            consents_ignored: 0,
        };
        let cap = self.settings.limits.max_kept;
        for (i, d) in batch.deliveries.iter().enumerate() {
            if let Some(&n) = times.get(i).filter(|n| **n >= REDELIVERY_LIMIT) {
                sorted
                    .poison
                    .push((d, PoisonReason::Redelivered { times: n }));
                continue;
            }
            let parsed = parse_upload(&d.data, received_at_ms, self.settings.limits).and_then(
                |u| match self.settings.apps.resolve(u.app_id.as_ref()) {
                    Some(app) => Ok((app, u)),
                    None => Err(PoisonReason::UnknownApp(
                        u.app_id.as_ref().map_or("", AppId::as_str).to_owned(),
                    )),
                },
            );
            match parsed {
                Ok((app, mut u)) => {
                    // An app whose consents come from WeChat's events (contract §8.4) takes
                    // none from uploads: one tap is never two consents.
                    if app.consent_source == ConsentSource::Events {
                        sorted.consents_ignored +=
                            u.consents.iter().map(|c| u64::from(c.count)).sum::<u64>();
                        u.consents.clear();
                    }
                    // Consents for templates the app does not list go no further.
                    u.consents.retain(|c| {
                        let known = app.accepts_template(&c.template_id);
                        if !known {
                            sorted.unknown_template += u64::from(c.count);
                        }
                        known
                    });
                    sorted.rejected_entries += u.rejected.len() as u64;
                    sorted.expired_on_arrival += u.expired as u64;
                    sorted.capped += u.capped as u64;
                    let open_id = u.open_id.clone();
                    // FormIds, prepayId uses and consents: the bank sorts them out. Many
                    // uploads of one user in a batch are trimmed to what the bank would keep.
                    let held = sorted.users.entry((app.id.clone(), open_id)).or_default();
                    held.extend(u.into_credentials());
                    sorted.capped += keep_latest(held, cap);
                }
                Err(reason) => sorted.poison.push((d, reason)),
            }
        }
        sorted
    }
}

type UserCredentials = ((AppId, OpenId), Vec<Credential>);

/// Trims one user's credentials of a batch to the `cap` expiring last (consents, which do not
/// expire and are not capped, all kept) once they are more than twice that, so a batch of
/// many uploads from one user holds no more than the bank would keep. Returns how many went.
fn keep_latest(held: &mut Vec<Credential>, cap: usize) -> u64 {
    let expiring = held.iter().filter(|c| !c.is_consent()).count();
    if expiring <= cap.saturating_mul(2) {
        return 0;
    }
    // Consents first, then the rest by expiry, latest first; cut after `cap` of the rest.
    held.sort_by_key(|c| (!c.is_consent(), std::cmp::Reverse(c.expires_at)));
    let keep = held.len() - expiring + cap;
    let dropped = held.len() - keep;
    held.truncate(keep);
    dropped as u64
}

/// Waits for the write of the batch in flight (never resolves when there is none).
async fn written(in_flight: &mut Option<InFlight>) -> Result<WriteResult, tokio::task::JoinError> {
    match in_flight {
        Some(f) => (&mut f.write).await,
        None => std::future::pending().await,
    }
}

/// Stores, retrying with exponential backoff while Redis is unreachable, for up to
/// [`REDIS_HOLD`] (the last wait is cut short so the last try falls at the hold, never after
/// it). `Ok(None)` if shutdown fired first; `Err` for an error retrying cannot fix or an
/// outage longer than the hold.
async fn store_with_retry(
    bank: &Bank,
    users: &[UserCredentials],
    mut shutdown: Shutdown,
) -> Result<Option<Vec<StoreReport>>, BankError> {
    let requests: Vec<StoreRequest<'_>> = users
        .iter()
        .map(|((app, open_id), credentials)| StoreRequest {
            app,
            open_id,
            credentials,
        })
        .collect();
    let mut delays = hold_delays();
    let started = Instant::now();
    // Stored, waiting for the replicas (`WXPUSH_REDIS_WAIT_REPLICAS`): not written again,
    // unless the connection it was written on was replaced since (a `WAIT` counts its own
    // connection's writes only, so one on a new connection would confirm nothing).
    let mut stored: Option<(Vec<StoreReport>, u64)> = None;
    loop {
        let generation = bank.connection_generation();
        let tried = match stored.take() {
            Some((value, written_on)) if written_on == generation => {
                bank.wait_replicas().await.map(|()| Applied {
                    value,
                    replicated: Ok(()),
                })
            }
            _ => bank.store_batch_applied(&requests).await,
        };
        let tried = tried.and_then(|a| match a.replicated {
            Ok(()) => Ok(a.value),
            Err(short) => {
                stored = Some((a.value, generation));
                Err(short.into())
            }
        });
        if let Err(BankError::NotReplicated(short)) = &tried {
            metrics::counter!(m::REDIS_NOT_REPLICATED, "role" => "ingest").increment(1);
            tracing::debug!(error = %short, "stored, but not yet on the replicas asked for");
        }
        match tried {
            Ok(r) => return Ok(Some(r)),
            Err(e) if e.is_transient() => {
                let Some(wait) = wait_before_retry(&mut delays, started.elapsed()) else {
                    return Err(e);
                };
                tracing::debug!(error = %e, "Redis unreachable; holding the batch and retrying");
                tokio::select! {
                    _ = shutdown.wait() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The backoff between tries of a held write: from 100 ms, doubling, with jitter.
fn hold_delays() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long to wait before the next try, `held` into the hold; `None` once the hold is over.
/// The last wait is cut short so the last try falls at the hold: a backoff step may not carry
/// the batch past it (the role would then hold uploads through an outage without saying so).
fn wait_before_retry(
    delays: &mut impl Iterator<Item = Duration>,
    held: Duration,
) -> Option<Duration> {
    let left = REDIS_HOLD.checked_sub(held).filter(|d| !d.is_zero())?;
    Some(delays.next().unwrap_or(left).min(left))
}

fn store_failure(e: BankError) -> RoleError {
    if !e.is_transient() {
        tracing::error!(error = %e, "storing a batch failed");
    }
    RoleError::Bank(e)
}

/// Credentials dropped before the bank, as the bank's own cap would have: `capped` too.
fn count_capped(n: u64) {
    metrics::counter!(m::CREDENTIALS_STORED, "result" => "capped").increment(n);
}

/// Consents dropped before the bank: their template is not one of their app's `templates`.
fn count_consents_ignored(n: u64) {
    metrics::counter!(m::CREDENTIALS_STORED, "result" => "consent_ignored").increment(n);
}

fn count_unknown_template(n: u64) {
    metrics::counter!(m::CREDENTIALS_STORED, "result" => "unknown_template").increment(n);
}

fn count_stored(r: &StoreReport) {
    for (result, n) in [
        ("added", r.added),
        ("known", r.known),
        ("expired", r.expired),
        ("capped", r.capped),
        ("consent", r.consents),
        ("consent_capped", r.consents_capped),
    ] {
        metrics::counter!(m::CREDENTIALS_STORED, "result" => result).increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the retry waits as if every try failed at once: the tries stop at the hold
    /// exactly, however the jitter falls.
    #[test]
    fn many_uploads_of_one_user_in_a_batch_are_trimmed_to_what_the_bank_keeps() {
        let mut held: Vec<Credential> = (0..250)
            .map(|i| Credential::form_id(format!("f{i}"), 1_000 + i))
            .collect();
        held.push(Credential::consent("TPL_A"));
        held.push(Credential::consent("TPL_A"));
        assert_eq!(keep_latest(&mut held, 100), 150);
        assert_eq!(held.iter().filter(|c| c.is_consent()).count(), 2);
        let kept: Vec<i64> = held
            .iter()
            .filter(|c| !c.is_consent())
            .map(|c| c.expires_at)
            .collect();
        assert_eq!(kept.len(), 100);
        assert_eq!(kept.iter().min(), Some(&1_150), "the latest 100 stay");
        // Up to twice the cap nothing is touched (no sorting per upload).
        let mut few: Vec<Credential> = (0..200)
            .map(|i| Credential::form_id(format!("f{i}"), i))
            .collect();
        assert_eq!(keep_latest(&mut few, 100), 0);
        assert_eq!(few.len(), 200);
    }

    #[test]
    fn a_held_write_is_tried_for_the_hold_and_never_after_it() {
        for _ in 0..200 {
            let mut delays = hold_delays();
            let (mut held, mut tries) = (Duration::ZERO, 1);
            while let Some(wait) = wait_before_retry(&mut delays, held) {
                assert!(!wait.is_zero(), "a zero wait after {tries} tries");
                held += wait;
                tries += 1;
            }
            assert_eq!(held, REDIS_HOLD, "the last try, after {tries}");
            assert!(
                tries >= 5,
                "{tries} tries in the hold: a blip costs nothing"
            );
        }
        let mut delays = hold_delays();
        assert_eq!(wait_before_retry(&mut delays, REDIS_HOLD), None);
        assert_eq!(
            wait_before_retry(&mut delays, REDIS_HOLD - Duration::from_millis(30)),
            Some(Duration::from_millis(30))
        );
    }
}
