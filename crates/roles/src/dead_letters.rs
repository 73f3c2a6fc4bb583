//! Dead letters counted for the operators' dashboard: after a role's dead letter is
//! confirmed, its reason code is counted and the letter kept in a short sample in Redis
//! ([`wxpush_bank::Bank::count_dead_letter`]), so the dashboard can show the dead-letter
//! queues by reason without consuming or redelivering them.
//!
//! A count that cannot be written is logged and dropped: the dead letter itself is safe in
//! its queue by then. This module must not decide what is dead-lettered.

use wxpush_bank::Bank;

/// Counts a dead letter of `source` with its reason `code` and text (shortened here).
pub async fn count(bank: &Bank, source: &str, code: &str, reason: &str) {
    let reason = wxpush_domain::short_reason(reason);
    if let Err(e) = bank.count_dead_letter(source, code, &reason).await {
        tracing::debug!(source, code, error = %e, "could not count a dead letter for the dashboard");
    }
}
