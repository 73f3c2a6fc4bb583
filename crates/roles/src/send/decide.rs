//! The send path's one decision: what an attempt does next, given what it spends, what it
//! found or what WeChat answered, and what it knows so far. Pure: no Redis, no WeChat, no
//! clock; every row has a unit test, and `docs/sending.md` shows the table this module
//! renders ([`table_markdown`]), checked by a test so the two never disagree.
//!
//! The rule behind every row: **a message may be sent again only when WeChat itself would
//! refuse a second delivery.** A formId is single-use: sent again after an unknown outcome,
//! WeChat answers `41029` if the first call delivered, so resending is safe and even tells
//! what happened. A prepayId allows three messages and a consent has no identity WeChat
//! checks: after an unknown outcome, sending either again could deliver a second message, so
//! the recipient is settled as `sent_unconfirmed` (prepayId) or `unknown` (consent) instead.
//!
//! This module must not perform a step (the attempt loop does) nor read the configuration.

use std::time::Duration;

use wxpush_domain::{Credential, CredentialKind};
use wxpush_wechat::Outcome;

use crate::outcomes::Recorded;

/// What an attempt spends: the rows of the table that differ by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Single-use: WeChat refuses a second use (`41029`).
    FormId,
    /// One of a prepayId's three uses: WeChat accepts the same id again.
    PrepayUse,
    /// A subscribe consent: nothing WeChat could recognise a second time.
    Consent,
}

impl Spend {
    pub fn of(credential: &Credential) -> Self {
        match credential.kind {
            CredentialKind::FormId => Spend::FormId,
            CredentialKind::PrepayId { .. } => Spend::PrepayUse,
            CredentialKind::Consent => Spend::Consent,
        }
    }

    /// What the recipient is recorded as when a call with this credential may have delivered
    /// and it cannot be sent again to find out.
    fn unconfirmed(self) -> Recorded {
        match self {
            Spend::FormId | Spend::PrepayUse => Recorded::SentUnconfirmed,
            Spend::Consent => Recorded::Unknown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Spend::FormId => "formId",
            Spend::PrepayUse => "prepayId use",
            Spend::Consent => "consent",
        }
    }
}

/// The least a job waits before its credential, in doubt, is sent again: a request whose
/// reply was lost (our timeout, a reset, a gateway's 5xx) may still be at WeChat, and the
/// resend must not race it (WeChat's refusal of a formId's second use is what makes the
/// resend safe, and two uses arriving together are not what it is documented for).
pub const DOUBT_WAIT: Duration = Duration::from_secs(15);

/// Credentials WeChat may refuse (`41028`, `41029`) in one job before it gives up.
pub const MAX_REFUSED: u32 = 10;

/// What an attempt knows besides WeChat's latest answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// A call with the held credential may have delivered the message.
    pub in_doubt: bool,
    /// Credentials WeChat refused in this job so far.
    pub refused: u32,
    /// The token was refreshed once already in this attempt.
    pub token_refreshed: bool,
    /// Quick resends left in this attempt.
    pub quick_left: u32,
}

impl State {
    pub fn new(quick_retries: u32) -> Self {
        Self {
            in_doubt: false,
            refused: 0,
            token_refreshed: false,
            quick_left: quick_retries,
        }
    }
}

/// What else happens when a recipient is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// WeChat did not use the credential: it goes back to the user.
    GiveBack,
    /// WeChat holds no consent (`43101`): the user's consents for the template are stale.
    ClearConsents,
    /// WeChat refused the campaign's data (`47003`): every recipient would fail the same way.
    StopCampaign(String),
    /// Both: the credential back (WeChat did not use it), and the campaign stopped.
    GiveBackAndStop(String),
}

impl After {
    /// Whether the credential goes back to the user.
    pub fn gives_back(&self) -> bool {
        matches!(self, After::GiveBack | After::GiveBackAndStop(_))
    }
}

/// Why an attempt ends without an outcome and without counting as an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `45011`: the minute quota; the next minute.
    NextMinute,
    /// `45009`: the daily quota; the app's fleet pauses for the cool-down.
    FleetPause,
    /// The token was refused again right after a refresh: a token problem, not the job's;
    /// the app's fleet pauses 15 s.
    TokenTrouble,
}

/// What the attempt does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The recipient is done: settle this outcome.
    Finish(Recorded, After),
    /// Call again with the same credential after a short wait; `in_doubt` from now on.
    Resend { in_doubt: bool },
    /// The credential was refused: claim the user's next one.
    Next,
    /// Invalidate the token (if still the fleet's current one) and call again.
    NewToken,
    /// End this attempt without an outcome and try again later (an attempt, within the retry
    /// budget); the credential stays held (a consent not in doubt goes back).
    Later { in_doubt: bool, reason: String },
    /// End without an outcome, not counted as an attempt, and wait.
    Wait { until: Until, in_doubt: bool },
}

/// What to do with a credential an earlier call held, before calling with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Call with it.
    Send,
    /// Do not: settle the recipient with this outcome.
    Finish(Recorded),
    /// It expired before any call could use it: claim the user's next one.
    Next,
}

/// A held credential found by a claim: `in_doubt` (an earlier call with it may have
/// delivered), `expired` (WeChat may refuse it as expired now).
pub fn on_held(spend: Spend, in_doubt: bool, expired: bool) -> Resume {
    match (spend, in_doubt, expired) {
        // The witness rule: a formId is sent again; 41029 then says the first one went out.
        (Spend::FormId, true, false) => Resume::Send,
        // Expired while in doubt: WeChat may answer 41028 whatever the first call did.
        (Spend::FormId, true, true) => Resume::Finish(Recorded::SentUnconfirmed),
        // Multi-use or identity-less: sending again could deliver twice.
        (Spend::PrepayUse | Spend::Consent, true, _) => Resume::Finish(spend.unconfirmed()),
        (_, false, true) => Resume::Next,
        (_, false, false) => Resume::Send,
    }
}

/// What WeChat's answer to a call means for the attempt.
pub fn decide(spend: Spend, outcome: &Outcome, s: &State) -> Step {
    match outcome {
        Outcome::Sent { .. } => Step::Finish(Recorded::Sent, After::Nothing),
        // Never resent at once: the first request may still be at WeChat (a timeout, a
        // reset, a gateway's 504), and the resend waits until it cannot be (`Later` in doubt
        // waits at least `DOUBT_WAIT`).
        Outcome::Unknown { reason } => match spend {
            Spend::FormId => Step::Later {
                in_doubt: true,
                reason: reason.clone(),
            },
            Spend::PrepayUse | Spend::Consent => Step::Finish(spend.unconfirmed(), After::Nothing),
        },
        // Not delivered (WeChat's -1, a refused connection): the same credential again.
        Outcome::Transient { .. } if s.quick_left > 0 => Step::Resend {
            in_doubt: s.in_doubt,
        },
        Outcome::Transient { reason, .. } => Step::Later {
            in_doubt: s.in_doubt,
            reason: reason.clone(),
        },
        Outcome::BadToken { .. } if !s.token_refreshed => Step::NewToken,
        Outcome::BadToken { .. } => Step::Wait {
            until: Until::TokenTrouble,
            in_doubt: s.in_doubt,
        },
        // After a call that may have delivered, a refusal may be WeChat refusing a second use
        // (41029) or an expired first use (41028): the earlier call may have been the one.
        Outcome::BadCredential { .. } if s.in_doubt => {
            Step::Finish(Recorded::SentUnconfirmed, After::Nothing)
        }
        // Not an answer a subscribe send gets: as a permanent refusal.
        Outcome::BadCredential { code } if spend == Spend::Consent => {
            Step::Finish(Recorded::Failed(*code), After::GiveBack)
        }
        Outcome::BadCredential { .. } if s.refused + 1 < MAX_REFUSED => Step::Next,
        Outcome::BadCredential { code } => Step::Finish(Recorded::Failed(*code), After::Nothing),
        Outcome::MinuteQuota => Step::Wait {
            until: Until::NextMinute,
            in_doubt: s.in_doubt,
        },
        Outcome::QuotaExhausted => Step::Wait {
            until: Until::FleetPause,
            in_doubt: s.in_doubt,
        },
        Outcome::NoConsent if spend == Spend::Consent => {
            Step::Finish(Recorded::Failed(43101), After::ClearConsents)
        }
        Outcome::NoConsent => permanent(spend, 43101, "", s),
        Outcome::Permanent { code, errmsg } => permanent(spend, *code, errmsg, s),
    }
}

/// A permanent refusal: recorded with its code; the credential, which WeChat did not use,
/// goes back. After an earlier call that may have delivered (a formId resent), the refusal of
/// the resend says nothing of the first: recorded `sent_unconfirmed`, nothing given back.
/// `47003` stops the campaign either way.
fn permanent(spend: Spend, code: i64, errmsg: &str, s: &State) -> Step {
    let outcome = if s.in_doubt {
        spend.unconfirmed()
    } else {
        Recorded::Failed(code)
    };
    let after = match (code == 47003, s.in_doubt) {
        (true, true) => After::StopCampaign(format!("47003: {errmsg}")),
        (true, false) => After::GiveBackAndStop(format!("47003: {errmsg}")),
        (false, true) => After::Nothing,
        (false, false) => After::GiveBack,
    };
    Step::Finish(outcome, after)
}

/// How a job ends when its retry budget is spent: `dead_lettered` (certainly not delivered;
/// the credential goes back, and `wxpush campaign retry` may send it again) or, when a call
/// may have delivered, as [`on_held`] would settle it.
pub fn give_up(spend: Spend, in_doubt: bool) -> (Recorded, After) {
    if in_doubt {
        (spend.unconfirmed(), After::Nothing)
    } else {
        (Recorded::DeadLettered, After::GiveBack)
    }
}

/// The table as `docs/sending.md` shows it: one row per case, generated from [`on_held`],
/// [`decide`] and [`give_up`] themselves.
pub fn table_markdown() -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let kinds = [Spend::FormId, Spend::PrepayUse, Spend::Consent];
    for spend in kinds {
        for (doubt, expired) in [(true, false), (true, true), (false, true)] {
            let when = format!(
                "held{}{}",
                if doubt { ", in doubt" } else { "" },
                if expired { ", expired" } else { "" }
            );
            rows.push([
                spend.name().into(),
                "(before a call)".into(),
                when,
                resume_text(&on_held(spend, doubt, expired)),
            ]);
        }
    }
    let answers: [(&str, Outcome); 10] = [
        ("0", Outcome::Sent { msgid: None }),
        (
            "unknown (timeout after writing, reset, HTTP 5xx, unreadable 200)",
            Outcome::Unknown { reason: "".into() },
        ),
        (
            "not delivered (-1, connection refused, HTTP 408/429)",
            Outcome::Transient {
                code: None,
                reason: "".into(),
            },
        ),
        ("40001, 40014, 42001", Outcome::BadToken { code: 40001 }),
        ("41028, 41029", Outcome::BadCredential { code: 41029 }),
        ("45011", Outcome::MinuteQuota),
        ("45009", Outcome::QuotaExhausted),
        ("43101", Outcome::NoConsent),
        (
            "47003",
            Outcome::Permanent {
                code: 47003,
                errmsg: "".into(),
            },
        ),
        (
            "40003, 40037, 41030, 48001, other codes, HTTP 3xx/4xx",
            Outcome::Permanent {
                code: 40037,
                errmsg: "".into(),
            },
        ),
    ];
    let states: [(&str, State); 5] = [
        ("first call", State::new(2)),
        (
            "in doubt",
            State {
                in_doubt: true,
                ..State::new(2)
            },
        ),
        (
            "no quick resend left",
            State {
                quick_left: 0,
                ..State::new(2)
            },
        ),
        (
            "token refreshed",
            State {
                token_refreshed: true,
                ..State::new(2)
            },
        ),
        (
            "10th refusal",
            State {
                refused: MAX_REFUSED - 1,
                ..State::new(2)
            },
        ),
    ];
    for spend in kinds {
        for (answer, outcome) in &answers {
            // Only the states that change the answer's row, each shown once.
            let mut seen: Vec<String> = Vec::new();
            // A call is made in doubt only with a formId ([`on_held`]).
            let reachable = states
                .iter()
                .filter(|(_, st)| !st.in_doubt || spend == Spend::FormId);
            for (label, state) in reachable {
                let step = step_text(spend, &decide(spend, outcome, state));
                if seen.contains(&step) {
                    continue;
                }
                seen.push(step.clone());
                rows.push([spend.name().into(), (*answer).into(), (*label).into(), step]);
            }
        }
        for doubt in [false, true]
            .into_iter()
            .filter(|d| !d || spend == Spend::FormId)
        {
            let (outcome, after) = give_up(spend, doubt);
            rows.push([
                spend.name().into(),
                "(retry budget spent)".into(),
                if doubt { "in doubt" } else { "not in doubt" }.into(),
                finish_text(&outcome, &after),
            ]);
        }
    }
    let mut out =
        String::from("| spends | WeChat's answer | when | next step |\n|---|---|---|---|\n");
    for [a, b, c, d] in rows {
        out.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
    }
    out
}

fn resume_text(r: &Resume) -> String {
    match r {
        Resume::Send => "call with it".into(),
        Resume::Finish(o) => format!("settle `{}`, no call", o.field()),
        Resume::Next => "claim the next credential".into(),
    }
}

fn finish_text(o: &Recorded, after: &After) -> String {
    let then = match after {
        After::Nothing => "",
        After::GiveBack => ", credential given back",
        After::ClearConsents => ", the user's consents for the template cleared",
        After::StopCampaign(_) => ", campaign stopped",
        After::GiveBackAndStop(_) => ", credential given back, campaign stopped",
    };
    format!("settle `{}`{then}", o.field())
}

fn step_text(spend: Spend, step: &Step) -> String {
    match step {
        Step::Finish(o, after) => finish_text(o, after),
        Step::Resend { in_doubt } => format!(
            "send the same credential again after a short wait{}",
            if *in_doubt { " (in doubt)" } else { "" }
        ),
        Step::Next => "claim the next credential (this one is spent)".into(),
        Step::NewToken => "invalidate the token if still current, call again".into(),
        Step::Later { in_doubt, .. } => format!(
            "retry later (an attempt within `WXPUSH_SEND_RETRY_FOR`), {}",
            match (spend, in_doubt) {
                (_, true) => format!(
                    "credential held, in doubt, at least {} s later",
                    DOUBT_WAIT.as_secs()
                ),
                (Spend::Consent, false) => "the consent given back".into(),
                (_, false) => "credential held".into(),
            }
        ),
        Step::Wait { until, .. } => match until {
            Until::NextMinute => "wait for the next minute (not an attempt)".into(),
            Until::FleetPause => {
                "pause the app's fleet for the cool-down, wait (not an attempt)".into()
            }
            Until::TokenTrouble => {
                "pause the app's sends 15 s, wait (not an attempt): a token problem".into()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown() -> Outcome {
        Outcome::Unknown {
            reason: "HTTP 504".into(),
        }
    }

    fn busy() -> Outcome {
        Outcome::Transient {
            code: Some(-1),
            reason: "WeChat busy".into(),
        }
    }

    fn doubt(s: State) -> State {
        State {
            in_doubt: true,
            ..s
        }
    }

    const KINDS: [Spend; 3] = [Spend::FormId, Spend::PrepayUse, Spend::Consent];

    #[test]
    fn a_held_credential_is_sent_again_only_when_wechat_would_refuse_a_second_use() {
        assert_eq!(on_held(Spend::FormId, true, false), Resume::Send);
        assert_eq!(
            on_held(Spend::FormId, true, true),
            Resume::Finish(Recorded::SentUnconfirmed)
        );
        assert_eq!(
            on_held(Spend::PrepayUse, true, false),
            Resume::Finish(Recorded::SentUnconfirmed)
        );
        assert_eq!(
            on_held(Spend::PrepayUse, true, true),
            Resume::Finish(Recorded::SentUnconfirmed)
        );
        assert_eq!(
            on_held(Spend::Consent, true, false),
            Resume::Finish(Recorded::Unknown)
        );
        for spend in KINDS {
            assert_eq!(on_held(spend, false, false), Resume::Send, "{spend:?}");
            assert_eq!(on_held(spend, false, true), Resume::Next, "{spend:?}");
        }
    }

    #[test]
    fn a_sent_message_is_sent_whatever_came_before() {
        for spend in KINDS {
            for s in [State::new(2), doubt(State::new(0))] {
                assert_eq!(
                    decide(spend, &Outcome::Sent { msgid: Some(1) }, &s),
                    Step::Finish(Recorded::Sent, After::Nothing)
                );
            }
        }
    }

    #[test]
    fn an_unknown_outcome_is_resent_only_with_a_formid_and_never_at_once() {
        // Not a quick resend even when one is left: the first request may still be at WeChat.
        for quick_left in [2, 0] {
            assert_eq!(
                decide(Spend::FormId, &unknown(), &State::new(quick_left)),
                Step::Later {
                    in_doubt: true,
                    reason: "HTTP 504".into()
                }
            );
        }
        // A prepayId is accepted three times: never again after an unknown outcome.
        assert_eq!(
            decide(Spend::PrepayUse, &unknown(), &State::new(2)),
            Step::Finish(Recorded::SentUnconfirmed, After::Nothing)
        );
        assert_eq!(
            decide(Spend::Consent, &unknown(), &State::new(2)),
            Step::Finish(Recorded::Unknown, After::Nothing)
        );
    }

    #[test]
    fn a_call_that_was_not_delivered_is_repeated_keeping_what_was_known() {
        for spend in KINDS {
            assert_eq!(
                decide(spend, &busy(), &State::new(1)),
                Step::Resend { in_doubt: false }
            );
            assert_eq!(
                decide(spend, &busy(), &State::new(0)),
                Step::Later {
                    in_doubt: false,
                    reason: "WeChat busy".into()
                }
            );
        }
        // A formId resent after an unknown outcome stays in doubt through a -1.
        assert_eq!(
            decide(Spend::FormId, &busy(), &doubt(State::new(1))),
            Step::Resend { in_doubt: true }
        );
    }

    #[test]
    fn a_refused_token_is_refreshed_once_then_the_job_waits_without_spending_an_attempt() {
        for spend in KINDS {
            let bad = Outcome::BadToken { code: 42001 };
            assert_eq!(decide(spend, &bad, &State::new(2)), Step::NewToken);
            let refreshed = State {
                token_refreshed: true,
                ..State::new(2)
            };
            assert_eq!(
                decide(spend, &bad, &refreshed),
                Step::Wait {
                    until: Until::TokenTrouble,
                    in_doubt: false
                }
            );
        }
    }

    #[test]
    fn a_refusal_after_a_call_that_may_have_delivered_is_that_delivery() {
        for code in [41028, 41029] {
            let refused = Outcome::BadCredential { code };
            assert_eq!(
                decide(Spend::FormId, &refused, &doubt(State::new(2))),
                Step::Finish(Recorded::SentUnconfirmed, After::Nothing),
                "{code}"
            );
            // Not in doubt: that credential is spent or invalid, the next one is tried.
            assert_eq!(decide(Spend::FormId, &refused, &State::new(2)), Step::Next);
            assert_eq!(
                decide(Spend::PrepayUse, &refused, &State::new(2)),
                Step::Next
            );
            let tenth = State {
                refused: MAX_REFUSED - 1,
                ..State::new(2)
            };
            assert_eq!(
                decide(Spend::FormId, &refused, &tenth),
                Step::Finish(Recorded::Failed(code), After::Nothing)
            );
            assert_eq!(
                decide(Spend::Consent, &refused, &State::new(2)),
                Step::Finish(Recorded::Failed(code), After::GiveBack)
            );
        }
    }

    #[test]
    fn quotas_wait_without_spending_an_attempt() {
        for spend in KINDS {
            for s in [State::new(2), doubt(State::new(2))] {
                assert_eq!(
                    decide(spend, &Outcome::MinuteQuota, &s),
                    Step::Wait {
                        until: Until::NextMinute,
                        in_doubt: s.in_doubt
                    }
                );
                assert_eq!(
                    decide(spend, &Outcome::QuotaExhausted, &s),
                    Step::Wait {
                        until: Until::FleetPause,
                        in_doubt: s.in_doubt
                    }
                );
            }
        }
    }

    #[test]
    fn permanent_refusals_are_recorded_and_give_the_unused_credential_back() {
        let bad_template = Outcome::Permanent {
            code: 40037,
            errmsg: "invalid template".into(),
        };
        for spend in KINDS {
            assert_eq!(
                decide(spend, &bad_template, &State::new(2)),
                Step::Finish(Recorded::Failed(40037), After::GiveBack)
            );
        }
        // In doubt, the earlier call may have delivered: the resend's refusal says nothing
        // of it, and the credential stays spent.
        assert_eq!(
            decide(Spend::FormId, &bad_template, &doubt(State::new(2))),
            Step::Finish(Recorded::SentUnconfirmed, After::Nothing)
        );
        assert_eq!(
            decide(Spend::FormId, &Outcome::NoConsent, &doubt(State::new(2))),
            Step::Finish(Recorded::SentUnconfirmed, After::Nothing)
        );
        let data = Outcome::Permanent {
            code: 47003,
            errmsg: "data.thing1.value invalid".into(),
        };
        assert_eq!(
            decide(Spend::Consent, &data, &State::new(2)),
            Step::Finish(
                Recorded::Failed(47003),
                After::GiveBackAndStop("47003: data.thing1.value invalid".into())
            )
        );
        assert_eq!(
            decide(Spend::Consent, &Outcome::NoConsent, &State::new(2)),
            Step::Finish(Recorded::Failed(43101), After::ClearConsents)
        );
        assert_eq!(
            decide(Spend::FormId, &Outcome::NoConsent, &State::new(2)),
            Step::Finish(Recorded::Failed(43101), After::GiveBack)
        );
    }

    #[test]
    fn a_spent_budget_is_dead_lettered_only_when_nothing_may_have_gone_out() {
        for spend in KINDS {
            assert_eq!(
                give_up(spend, false),
                (Recorded::DeadLettered, After::GiveBack)
            );
        }
        assert_eq!(
            give_up(Spend::FormId, true),
            (Recorded::SentUnconfirmed, After::Nothing)
        );
        assert_eq!(
            give_up(Spend::Consent, true),
            (Recorded::Unknown, After::Nothing)
        );
    }

    #[test]
    fn the_docs_show_the_table_this_module_decides_by() {
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/sending.md"
        ))
        .expect("docs/sending.md");
        let table = table_markdown();
        assert!(
            docs.contains(&table),
            "docs/sending.md does not show the decision table as decide.rs renders it; \
             paste this:\n{table}"
        );
    }
}
