//! The start-up check of what Redis's settings let it lose ([`wxpush_bank::Durability`]),
//! made by every role's process before it consumes anything.
//!
//! An evicting `maxmemory-policy` (anything but `noeviction`: every bank key has a TTL, so
//! even the `volatile-*` policies pick credentials and campaign marks) refuses the start unless
//! `WXPUSH_REDIS_ALLOW_EVICTION=1`; AOF off is a warning (a restart loses the writes since the
//! last snapshot). Settings Redis will not show (managed Redis often denies `CONFIG`) are
//! `unknown`, logged once, never fatal. What was found goes to the log and to `/readyz`
//! ([`Health::set_durability`]). This module must not change Redis's settings.

use wxpush_bank::{Bank, Durability};

use crate::Health;

/// Where operators read what the settings mean.
pub const DOCS: &str = "docs/operations.md#redis-for-production";

/// Why a role does not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "Redis's maxmemory-policy is {policy}: it evicts keys under memory pressure, and every \
     bank key has a TTL, so credentials and campaign marks could vanish; set it to noeviction \
     (see {DOCS}), or WXPUSH_REDIS_ALLOW_EVICTION=1 to start anyway"
)]
pub struct EvictingRedis {
    pub policy: String,
}

/// Reads Redis's settings, logs and reports what they can lose, and refuses an evicting
/// policy unless `allow_eviction`.
pub async fn check(
    bank: &Bank,
    allow_eviction: bool,
    health: &Health,
) -> Result<Durability, EvictingRedis> {
    let d = bank.durability().await;
    if d.evicts() && !allow_eviction {
        // The error is the one line the operator sees: nothing logged before it.
        return Err(EvictingRedis {
            policy: d.maxmemory_policy.shown().to_owned(),
        });
    }
    report(&d, health);
    Ok(d)
}

/// Logs what `d` says (once: this runs at start) and hands it to `/readyz`.
pub fn report(d: &Durability, health: &Health) {
    for (name, setting) in [
        ("appendonly", &d.appendonly),
        ("maxmemory-policy", &d.maxmemory_policy),
    ] {
        if let wxpush_bank::Setting::Unknown(why) = setting {
            tracing::warn!(
                setting = name,
                reason = %why,
                "cannot read Redis's {name} (CONFIG denied?): whether Redis keeps what it \
                 acknowledged is unknown; check it by hand ({DOCS})"
            );
        }
    }
    let risks = d.risks();
    for risk in &risks {
        tracing::warn!("Redis can lose acknowledged data: {risk} ({DOCS})");
    }
    if risks.is_empty() && d.appendonly.known().is_some() && d.maxmemory_policy.known().is_some() {
        tracing::info!(
            appendonly = d.appendonly.shown(),
            maxmemory_policy = d.maxmemory_policy.shown(),
            "Redis keeps what it acknowledges"
        );
    }
    health.set_durability(d.clone());
}
