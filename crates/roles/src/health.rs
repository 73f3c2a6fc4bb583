//! What a process knows about its own health, for `/readyz` and the supervisor.
//!
//! [`Health`] is shared by the roles of one process: each role says whether it is consuming
//! (its session is running on a live RabbitMQ channel), and a probe says whether Redis
//! answers. A process is ready when Redis answers and every role it runs is consuming. It
//! also shows what Redis's settings can lose ([`crate::durability`]), which is reported, not
//! a reason to be unready. This
//! module must not serve HTTP (the CLI does) nor decide what to do about an outage (the
//! supervisor does).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The health of one process, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    redis: AtomicBool,
    roles: Mutex<BTreeMap<&'static str, bool>>,
    durability: Mutex<Option<wxpush_bank::Durability>>,
}

/// A snapshot for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub redis: bool,
    /// Each role of the process and whether it is consuming.
    pub roles: Vec<(&'static str, bool)>,
    /// Redis's settings as read at start (`None`: not checked).
    pub durability: Option<wxpush_bank::Durability>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a role of this process (not consuming yet).
    pub fn register(&self, role: &'static str) {
        self.roles().entry(role).or_insert(false);
    }

    pub fn set_consuming(&self, role: &'static str, consuming: bool) {
        self.roles().insert(role, consuming);
        metrics::gauge!(crate::metrics::CONSUMING, "role" => role)
            .set(f64::from(u8::from(consuming)));
    }

    pub fn set_redis(&self, up: bool) {
        self.0.redis.store(up, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::DEPENDENCY_UP, "dependency" => "redis")
            .set(f64::from(u8::from(up)));
    }

    /// What Redis's settings can lose, as read at start.
    pub fn set_durability(&self, d: wxpush_bank::Durability) {
        *self.0.durability.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    pub fn redis(&self) -> bool {
        self.0.redis.load(Ordering::Relaxed)
    }

    pub fn readiness(&self) -> Readiness {
        let roles: Vec<_> = self.roles().iter().map(|(r, c)| (*r, *c)).collect();
        let redis = self.redis();
        let durability = self
            .0
            .durability
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Readiness {
            ready: redis && !roles.is_empty() && roles.iter().all(|(_, c)| *c),
            redis,
            roles,
            durability,
        }
    }

    fn roles(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always valid.
        self.0.roles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_redis_answers_and_every_role_consumes() {
        let h = Health::new();
        assert!(!h.readiness().ready, "no role yet");
        h.register("send");
        h.register("ingest");
        h.set_redis(true);
        h.set_consuming("send", true);
        assert!(!h.readiness().ready, "ingest is not consuming");
        h.set_consuming("ingest", true);
        assert!(h.readiness().ready);
        h.set_redis(false);
        let r = h.readiness();
        assert!(!r.ready && !r.redis);
        assert_eq!(r.roles, vec![("ingest", true), ("send", true)]);
    }
}
