//! Keeping a role running through outages: the supervisor around each role's sessions.
//!
//! A role runs in *sessions*: a session declares its topology, starts consuming on a channel
//! of its own (with its prefetch) and works until shutdown or until RabbitMQ or Redis fails
//! under it. When a session ends with a recoverable error, whatever it had not acknowledged
//! goes back to the queue with its channel; the supervisor marks the role not ready, waits
//! (with backoff, logging once per interval rather than per message) until Redis answers
//! and the RabbitMQ connection is back (reconnecting it), then starts a new session. An error
//! before the first session ever consumed (a wrong topology, say) is returned: the process
//! exits with it.
//!
//! A session normally notices a lost connection within a second and ends with the error. As a
//! safety net, one still running [`ABANDON_AFTER`] after its RabbitMQ connection died (stuck on
//! a request the dead connection will never answer) is dropped, as if its process had been
//! killed: what it held goes back to the queue with the connection, which the roles' guarantees
//! already allow for (the fault suite kills roles at random).
//! This module must not know what a role does with its messages.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;

use crate::{Deps, Health, RoleError, Shutdown};

/// How often an outage that goes on is logged again.
const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// How long a session may keep running after its RabbitMQ connection died.
pub const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// What one session of a role gets: the connections, the stop signal, and the way to say it
/// is consuming.
pub struct Session {
    pub deps: Deps,
    pub shutdown: Shutdown,
    role: &'static str,
    health: Health,
    started: Arc<AtomicBool>,
}

impl Session {
    /// Called by the role once its consumer is started: the role is ready.
    pub fn consuming(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.health.set_consuming(self.role, true);
    }

    /// A session for a role run without a supervisor (tests and benchmarks).
    pub fn standalone(deps: &Deps, shutdown: Shutdown) -> Self {
        Self {
            deps: deps.clone(),
            shutdown,
            role: "standalone",
            health: Health::new(),
            started: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Runs `session` again and again until one ends without error (shutdown), recovering from
/// outages in between. `Ok(None)` when shutdown came during an outage.
pub async fn supervise<F, Fut, T>(
    role: &'static str,
    deps: &Deps,
    health: &Health,
    shutdown: Shutdown,
    mut session: F,
) -> Result<Option<T>, RoleError>
where
    F: FnMut(Session) -> Fut,
    Fut: Future<Output = Result<T, RoleError>>,
{
    health.register(role);
    let mut deps = deps.clone();
    let mut ever_consumed = false;
    loop {
        let started = Arc::new(AtomicBool::new(false));
        let running = session(Session {
            deps: deps.clone(),
            shutdown: shutdown.clone(),
            role,
            health: health.clone(),
            started: started.clone(),
        });
        let result = tokio::select! {
            r = running => r,
            () = connection_dead_for(&deps.broker, ABANDON_AFTER) => {
                tracing::warn!(role, after = ?ABANDON_AFTER, "session still running on a lost RabbitMQ connection: abandoned");
                Err(RoleError::Broker(wxpush_broker::BrokerError::ConnectionLost))
            }
        };
        health.set_consuming(role, false);
        ever_consumed |= started.load(Ordering::Relaxed);
        let error = match result {
            Ok(t) => return Ok(Some(t)),
            Err(e) if shutdown.is_triggered() => {
                tracing::warn!(role, error = %e, "stopped with an error; unsettled work went back to the queue");
                return Ok(None);
            }
            Err(e) if !ever_consumed || !e.is_recoverable() => return Err(e),
            Err(e) => e,
        };
        metrics::counter!(crate::metrics::SESSIONS_RESTARTED, "role" => role).increment(1);
        let mut outage = Outage::new(role);
        outage.note(&format!("{error}"));
        if !wait_until_usable(&mut deps, health, shutdown.clone(), &mut outage).await {
            return Ok(None);
        }
        tracing::info!(
            role,
            after_ms = outage.since.elapsed().as_millis() as u64,
            "dependencies are back: consuming again"
        );
    }
}

/// Resolves once `broker`'s connection has been down for `limit` without a break.
async fn connection_dead_for(broker: &wxpush_broker::Broker, limit: Duration) {
    let mut dead_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if broker.is_connected() {
            dead_since = None;
        } else if dead_since.get_or_insert_with(Instant::now).elapsed() >= limit {
            return;
        }
    }
}

/// Waits until Redis answers and the RabbitMQ connection is up (reconnecting it); `false` if
/// shutdown came first.
async fn wait_until_usable(
    deps: &mut Deps,
    health: &Health,
    mut shutdown: Shutdown,
    outage: &mut Outage,
) -> bool {
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let wait = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.wait() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        match tokio::time::timeout(Duration::from_secs(2), deps.bank.ping()).await {
            Ok(Ok(())) => health.set_redis(true),
            Ok(Err(e)) => {
                health.set_redis(false);
                outage.note(&format!("Redis unreachable: {e}"));
                continue;
            }
            Err(_) => {
                health.set_redis(false);
                outage.note("Redis unreachable: no answer within 2s");
                continue;
            }
        }
        if deps.broker.is_connected() {
            return true;
        }
        match deps.reconnect_broker().await {
            Ok(broker) => {
                deps.broker = broker;
                metrics::counter!(crate::metrics::RECONNECTS, "dependency" => "rabbitmq")
                    .increment(1);
                return true;
            }
            Err(e) => outage.note(&format!("{e}")),
        }
    }
}

/// One outage of one role, logged when it starts and then once per interval.
struct Outage {
    role: &'static str,
    since: Instant,
    last_log: Option<Instant>,
}

impl Outage {
    fn new(role: &'static str) -> Self {
        Self {
            role,
            since: Instant::now(),
            last_log: None,
        }
    }

    fn note(&mut self, what: &str) {
        if self
            .last_log
            .is_some_and(|t| t.elapsed() < OUTAGE_LOG_INTERVAL)
        {
            return;
        }
        self.last_log = Some(Instant::now());
        tracing::warn!(
            role = self.role,
            for_s = self.since.elapsed().as_secs(),
            "not consuming: {what}; retrying"
        );
    }
}
