//! The names of the metrics the roles record, in one place, and their descriptions.
//!
//! Roles record through the `metrics` facade; the CLI installs the Prometheus recorder and
//! serves `/metrics`. Labels are bounded sets (queues, reasons, outcome names, WeChat error
//! codes), never openIds or campaign ids. This module must not install a recorder.

pub const CONSUMED: &str = "wxpush_messages_consumed_total";
pub const UPLOADS_STORED: &str = "wxpush_uploads_stored_total";
pub const CREDENTIALS_STORED: &str = "wxpush_credentials_stored_total";
pub const REJECTED: &str = "wxpush_rejected_total";
pub const DEAD_LETTERED: &str = "wxpush_dead_lettered_total";
pub const DEAD_LETTERS_REFUSED: &str = "wxpush_dead_letters_refused_total";
pub const CLAIMS: &str = "wxpush_claims_total";
pub const WECHAT_CALLS: &str = "wxpush_wechat_calls_total";
pub const WECHAT_SECONDS: &str = "wxpush_wechat_call_duration_seconds";
pub use wxpush_fleet::metrics::{RATE_LIMIT_WAITS, RATE_LIMIT_WAIT_MS, TOKEN_REFRESHES};
pub const JOBS_RETRIED: &str = "wxpush_jobs_retried_total";
pub const JOBS_PARKED: &str = "wxpush_jobs_parked_total";
pub const JOBS_PARKED_PAUSED: &str = "wxpush_jobs_parked_paused_total";
pub const JOBS_DEFERRED_QUIET: &str = "wxpush_jobs_deferred_quiet_hours_total";
pub const CAMPAIGN_CONTROLS_SEEN: &str = "wxpush_campaign_controls_seen_total";
pub const SEND_OUTCOMES: &str = "wxpush_send_outcomes_total";
pub const SEND_FENCED: &str = "wxpush_send_fenced_total";
pub const JOBS_PUBLISHED: &str = "wxpush_campaign_jobs_published_total";
pub const CAMPAIGNS_DISPATCHED: &str = "wxpush_campaigns_dispatched_total";
pub const CAMPAIGNS_SCHEDULED: &str = "wxpush_campaigns_scheduled_total";
pub const CAMPAIGNS_PARKED: &str = "wxpush_campaign_messages_parked_total";
pub const CONSUMING: &str = "wxpush_consuming";
pub const DEPENDENCY_UP: &str = "wxpush_dependency_up";
pub const SESSIONS_RESTARTED: &str = "wxpush_sessions_restarted_total";
pub const RECONNECTS: &str = "wxpush_reconnects_total";
pub const REDIS_NOT_REPLICATED: &str = "wxpush_redis_not_replicated_total";
pub const RECEIPTS_PUBLISHED: &str = "wxpush_receipts_published_total";
pub const EVENT_REQUESTS: &str = "wxpush_event_requests_total";
pub const EVENTS: &str = "wxpush_events_total";
pub const EVENT_DELIVERIES: &str = "wxpush_event_deliveries_total";

/// Counts a dead letter RabbitMQ refused (its dead-letter queue is full: `reject-publish`), so
/// that an alert can fire; the message stays with the role, handed back, never dropped.
pub fn count_refused_dead_letter(source: &'static str, e: &wxpush_broker::BrokerError) {
    if matches!(e, wxpush_broker::BrokerError::Nacked { .. }) {
        metrics::counter!(DEAD_LETTERS_REFUSED, "source" => source).increment(1);
        tracing::error!(
            source,
            "RabbitMQ refused a dead letter: the dead-letter queue is full; the message is \
             handed back, not dropped (empty or raise the queue's limit)"
        );
    }
}

/// Registers the description of every metric (shown as `# HELP` lines).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CONSUMED, "Messages taken from a queue, by queue");
    describe_counter!(
        JOBS_DEFERRED_QUIET,
        "Send jobs held for their app's quiet hours (counted once per job when first held)"
    );
    describe_counter!(
        JOBS_PARKED_PAUSED,
        "Send jobs parked because an operator paused their campaign"
    );
    describe_counter!(
        CAMPAIGN_CONTROLS_SEEN,
        "Operators' campaign controls (paused, resumed, cancelled) as this process first saw them"
    );
    describe_counter!(
        RECEIPTS_PUBLISHED,
        "Receipts published to <ns>.receipts (confirmed), from the outboxes"
    );
    describe_counter!(
        UPLOADS_STORED,
        "Upload messages whose credentials are in the bank"
    );
    describe_counter!(
        CREDENTIALS_STORED,
        "Credentials of good uploads, by what became of them (added, known, expired, capped, \
         consent, consent_capped, unknown_template)"
    );
    describe_counter!(
        REJECTED,
        "Entries refused inside otherwise good uploads, by reason"
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages sent to a dead-letter queue, by source and reason"
    );
    describe_counter!(
        DEAD_LETTERS_REFUSED,
        "Dead letters RabbitMQ refused (a full dead-letter queue), by source: alert on any"
    );
    describe_counter!(CLAIMS, "Campaign credential claims, by result");
    describe_counter!(
        WECHAT_CALLS,
        "Calls to WeChat, by API and error code (0: success)"
    );
    describe_histogram!(WECHAT_SECONDS, Unit::Seconds, "Latency of calls to WeChat");
    describe_counter!(
        RATE_LIMIT_WAITS,
        "Send permits that had to wait for the fleet rate"
    );
    describe_counter!(
        RATE_LIMIT_WAIT_MS,
        Unit::Milliseconds,
        "Time spent waiting for send permits, in milliseconds"
    );
    describe_counter!(
        TOKEN_REFRESHES,
        "Access tokens fetched from WeChat by this process"
    );
    describe_counter!(
        JOBS_RETRIED,
        "Send jobs re-published to a delay queue for another attempt"
    );
    describe_counter!(
        JOBS_PARKED,
        "Send jobs parked without an attempt (pause, minute quota, lease)"
    );
    describe_counter!(SEND_OUTCOMES, "Final outcomes of send jobs, by outcome");
    describe_counter!(
        SEND_FENCED,
        "Calls not made because too long had passed since their claim (the lease's fence)"
    );
    describe_counter!(JOBS_PUBLISHED, "Send jobs published by the dispatcher");
    describe_counter!(
        CAMPAIGNS_DISPATCHED,
        "Campaigns fully fanned out by this process"
    );
    describe_counter!(
        CAMPAIGNS_SCHEDULED,
        "Scheduled campaigns (sendAt ahead) whose record this process opened"
    );
    describe_counter!(
        CAMPAIGNS_PARKED,
        "Campaign messages parked in a dispatch delay queue, by reason (scheduled: not yet \
         due; paused: due while an operator has it paused)"
    );
    describe_gauge!(CONSUMING, "1 while the role's consumer runs, by role");
    describe_gauge!(
        DEPENDENCY_UP,
        "1 while the dependency answers, by dependency"
    );
    describe_counter!(
        SESSIONS_RESTARTED,
        "Role sessions restarted after an outage, by role"
    );
    describe_counter!(
        RECONNECTS,
        "Connections re-opened after an outage, by dependency"
    );
    describe_counter!(
        EVENT_REQUESTS,
        "Requests to the message push endpoint (wxpush events), by result: ok, server_check, \
         or why it was refused (bad_signature, missing_signature, stale_timestamp, \
         replayed_nonce, too_large, unknown_app, plain_with_key, bad_envelope, other_app, \
         bad_body, unavailable, ...)"
    );
    describe_counter!(
        EVENTS,
        "WeChat push events signed and read, by event (popup, change, sent, other) and result \
         (applied, repeated: a retried push, ignored_consent_source, unknown_template, ...)"
    );
    describe_counter!(
        EVENT_DELIVERIES,
        "Subscribe message deliveries WeChat reported (subscribe_msg_sent_event), by outcome"
    );
    describe_counter!(
        REDIS_NOT_REPLICATED,
        "Writes fewer Redis replicas acknowledged than WXPUSH_REDIS_WAIT_REPLICAS asks, by \
         role: their messages were not acknowledged (held or handed back)"
    );
}
