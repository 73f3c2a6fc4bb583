//! The demo's checks: what WeChat (the fake) accepted, and what the bank and WeChat hold
//! afterwards, against what the generated users should have received.
//!
//! For the formId campaign: nobody messaged twice, no formId accepted twice, everyone with a
//! usable formId messaged once, the outcomes add up. For the subscribe campaign: nobody got
//! two subscribe messages, everyone holding a consent got one, no consent was spent beyond
//! one per user (the bank's count and WeChat's agree, user by user), the outcomes add up. For
//! the orders (act three): the consents came from WeChat's events, each order reached WeChat
//! at most once with its user's own order number, every message has its receipt, and the
//! delivered receipts are WeChat's deliveries. And every role stopped cleanly.
//!
//! This module owns those judgments. It must not read anything itself (it is given the
//! records) nor print (the report does).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitStatus;

use wxpush_fake_wechat::{Endpoint, RequestRecord};

use super::campaign::{Plan, Progress};
use super::orders::{Act, Popup, Shopper};
use super::population::{Answer, Population};
use super::{fmt_n, fmt_secs, STOP_GRACE};

/// One check and its outcome, in words.
pub(super) struct Check {
    pub ok: bool,
    pub text: String,
}

fn check(ok: bool, text: String) -> Check {
    Check { ok, text }
}

/// What WeChat accepted for one kind of send.
pub(super) struct Deliveries {
    /// Send calls made.
    pub calls: u64,
    /// Messages accepted, per openId.
    pub per_user: HashMap<String, u64>,
    /// Messages accepted, per formId (template sends).
    pub per_form_id: HashMap<String, u64>,
}

impl Deliveries {
    /// The sends of `app` to `endpoint` with `template` among the fake's records.
    pub(super) fn of(
        requests: &[RequestRecord],
        app: &str,
        endpoint: Endpoint,
        template: &str,
    ) -> Self {
        let mut d = Deliveries {
            calls: 0,
            per_user: HashMap::new(),
            per_form_id: HashMap::new(),
        };
        for r in requests {
            if r.endpoint != endpoint
                || r.template_id.as_deref() != Some(template)
                || r.app_id.as_deref() != Some(app)
            {
                continue;
            }
            let Some(to) = r.touser.as_deref() else {
                continue;
            };
            d.calls += 1;
            if r.errcode == Some(0) {
                *d.per_user.entry(to.to_owned()).or_default() += 1;
                if let Some(f) = r.form_id.as_deref() {
                    *d.per_form_id.entry(f.to_owned()).or_default() += 1;
                }
            }
        }
        d
    }

    pub(super) fn accepted(&self) -> u64 {
        self.per_user.values().sum()
    }

    /// Users who got more than one message.
    fn twice(&self) -> usize {
        self.per_user.values().filter(|&&n| n > 1).count()
    }

    /// How many of `expected` got exactly one message, and how many users outside it got any.
    fn once_each(&self, expected: &HashSet<&str>) -> (usize, usize) {
        let once = expected
            .iter()
            .filter(|u| self.per_user.get(**u) == Some(&1))
            .count();
        let strangers = self
            .per_user
            .keys()
            .filter(|u| !expected.contains(u.as_str()))
            .count();
        (once, strangers)
    }
}

/// Each user's consents left for the subscribe template after the campaigns, in the order of
/// the population's users.
pub(super) struct ConsentsLeft {
    pub bank: Vec<u64>,
    pub wechat: Vec<u64>,
}

fn users(n: usize) -> String {
    format!("{} user{}", fmt_n(n as u64), if n == 1 { "" } else { "s" })
}

/// "a sent + b unconfirmed + ... = total of audience ...": the recipients' outcomes add up to
/// the audience.
fn outcomes_add_up(plan: &Plan, g: &Progress, whom: &str) -> Check {
    let mut parts = vec![format!("{} sent", fmt_n(g.get("sent")))];
    let mut part = |n: u64, what: &str, always: bool| {
        if always || n > 0 {
            parts.push(format!("{} {what}", fmt_n(n)));
        }
    };
    let form_id = plan.which == super::campaign::Which::FormId;
    part(g.get("sent_unconfirmed"), "unconfirmed", form_id);
    part(g.get("no_credential"), "no credential", true);
    part(g.failed(), "failed", true);
    part(g.get("dead_lettered"), "dead-lettered", true);
    part(g.get("unknown"), "unknown", !form_id);
    part(g.get("stopped"), "stopped", false);
    let total = g.outcomes();
    check(
        total == plan.audience_size && g.targeted == plan.audience_size,
        format!(
            "outcomes add up: {} = {} of {} {whom} ({} targeted)",
            parts.join(" + "),
            fmt_n(total),
            fmt_n(plan.audience_size),
            fmt_n(g.targeted)
        ),
    )
}

/// The formId campaign's checks.
pub(super) fn form_id(p: &Population, plan: &Plan, g: &Progress, d: &Deliveries) -> Vec<Check> {
    let mut out = Vec::new();
    let twice = d.twice();
    out.push(check(
        twice == 0,
        format!("no user got two messages ({} did)", users(twice)),
    ));
    let reused = d.per_form_id.values().filter(|&&n| n > 1).count();
    out.push(check(
        reused == 0,
        format!(
            "no formId was accepted twice ({} were)",
            fmt_n(reused as u64)
        ),
    ));
    let reachable: HashSet<&str> = p
        .users
        .iter()
        .filter(|u| u.reachable)
        .map(|u| u.open_id.as_str())
        .collect();
    let (once, strangers) = d.once_each(&reachable);
    out.push(check(
        once == reachable.len() && strangers == 0 && g.messages() == reachable.len() as u64,
        format!(
            "every user with a usable formId got exactly one message ({} of {}; sent + sent \
             unconfirmed = {}; messages to users without one: {})",
            fmt_n(once as u64),
            fmt_n(reachable.len() as u64),
            fmt_n(g.messages()),
            strangers
        ),
    ));
    let whom = if plan.audience_size == p.users.len() as u64 {
        "users"
    } else {
        "reachable users"
    };
    out.push(outcomes_add_up(plan, g, whom));
    out
}

/// The subscribe campaign's checks.
pub(super) fn subscribe(
    p: &Population,
    plan: &Plan,
    g: &Progress,
    d: &Deliveries,
    left: &ConsentsLeft,
) -> Vec<Check> {
    let mut out = Vec::new();
    let twice = d.twice();
    out.push(check(
        twice == 0,
        format!("no user got two subscribe messages ({} did)", users(twice)),
    ));
    let consenting: HashSet<&str> = p
        .users
        .iter()
        .filter(|u| u.answer.accepted() > 0)
        .map(|u| u.open_id.as_str())
        .collect();
    // A send whose answer was lost is `unknown` (never resent); WeChat's record says whether
    // it was delivered.
    let (once, strangers) = d.once_each(&consenting);
    let sent = g.messages() + g.get("unknown");
    out.push(check(
        once == consenting.len() && strangers == 0 && sent == consenting.len() as u64,
        format!(
            "every user holding a consent got exactly one subscribe message ({} of {}; sent + \
             unknown = {}; messages to users without one: {})",
            fmt_n(once as u64),
            fmt_n(consenting.len() as u64),
            fmt_n(sent),
            strangers
        ),
    ));

    // One consent spent per user messaged, none for anyone else: what is left is what they
    // granted less one, in the bank and in WeChat alike.
    let (mut twice_ok, mut twice_n, mut once_ok, mut once_n, mut differ, mut wrong) =
        (0, 0, 0, 0, 0, 0);
    for (i, u) in p.users.iter().enumerate() {
        let expected = u.answer.accepted().saturating_sub(1);
        let bank = left.bank.get(i).copied();
        let wechat = left.wechat.get(i).copied();
        let right = bank == Some(expected) && wechat == Some(expected);
        if bank != wechat {
            differ += 1;
        }
        if !right {
            wrong += 1;
        }
        match u.answer {
            Answer::Twice => {
                twice_n += 1;
                twice_ok += usize::from(right);
            }
            Answer::Once => {
                once_n += 1;
                once_ok += usize::from(right);
            }
            Answer::Declined | Answer::NeverAsked => {}
        }
    }
    out.push(check(
        wrong == 0 && left.bank.len() == p.users.len() && left.wechat.len() == p.users.len(),
        format!(
            "no consent was spent beyond one per user, and the bank and WeChat agree on what is \
             left: 1 for {} of {} who accepted twice, 0 for {} of {} who accepted once ({} \
             with another count, {} where the bank and WeChat differ)",
            fmt_n(twice_ok as u64),
            users(twice_n),
            fmt_n(once_ok as u64),
            users(once_n),
            users(wrong),
            users(differ)
        ),
    ));
    let mut add_up = outcomes_add_up(plan, g, "users holding a consent");
    if let Some(reason) = &g.stopped {
        add_up.ok = false;
        add_up
            .text
            .push_str(&format!("; the campaign was stopped: {reason}"));
    }
    out.push(add_up);
    out
}

/// Every role exited 0 after SIGTERM.
pub(super) fn fleet(exits: &[(String, Option<ExitStatus>)], logs: &Path) -> Check {
    let unclean: Vec<String> = exits
        .iter()
        .filter(|(_, s)| !s.is_some_and(|s| s.success()))
        .map(|(name, s)| match s {
            Some(s) => format!("{name} {s}"),
            None => format!("{name} killed after {}", fmt_secs(STOP_GRACE)),
        })
        .collect();
    if unclean.is_empty() {
        check(
            true,
            format!(
                "all {} roles stopped cleanly on SIGTERM (exit 0)",
                exits.len()
            ),
        )
    } else {
        check(
            false,
            format!(
                "roles stopped cleanly on SIGTERM: {} (logs in {})",
                unclean.join(", "),
                logs.display()
            ),
        )
    }
}

/// The third act's checks: the consents came from WeChat's events, each order reached WeChat
/// at most once and carried its user's own order number, every message has its outcome
/// receipt, and the delivered receipts are WeChat's deliveries, once each.
pub(super) fn orders(act: &Act) -> Vec<Check> {
    let mut out = Vec::new();
    let by_user: HashMap<&str, &Shopper> = act
        .shoppers
        .iter()
        .map(|s| (s.open_id.as_str(), s))
        .collect();
    let by_message: HashMap<&str, &Shopper> = act
        .shoppers
        .iter()
        .map(|s| (s.message_id.as_str(), s))
        .collect();
    let accepted = act.shoppers.iter().filter(|s| s.popup.accepted()).count();
    let others = act.shoppers.len() - accepted;
    let pushed_twice = act
        .shoppers
        .iter()
        .filter(|s| s.popup == Popup::AcceptedPushedTwice)
        .count();

    // Consents: one per acceptance, however often WeChat pushed it; none otherwise.
    let (mut one, mut none) = (0usize, 0usize);
    for (s, n) in act.shoppers.iter().zip(&act.consents) {
        if s.popup.accepted() && *n == 1 {
            one += 1;
        } else if !s.popup.accepted() && *n == 0 {
            none += 1;
        }
    }
    out.push(check(
        one == accepted && none == others && act.consents.len() == act.shoppers.len(),
        format!(
            "the consents came from WeChat's popup events: 1 in the bank for {} of {} who \
             accepted ({} pushed twice, counted once), 0 for {} of {} who declined or were \
             never asked",
            fmt_n(one as u64),
            users(accepted),
            fmt_n(pushed_twice as u64),
            fmt_n(none as u64),
            users(others)
        ),
    ));

    // WeChat's side: deliveries per user (one order, one messageId each).
    let mut delivered: HashMap<&str, u64> = HashMap::new();
    let (mut own, mut wrong) = (0usize, 0usize);
    let mut msgids: HashMap<&str, i64> = HashMap::new();
    for r in act.sends.iter().filter(|r| r.delivered) {
        let Some(to) = r.touser.as_deref() else {
            wrong += 1;
            continue;
        };
        *delivered.entry(to).or_default() += 1;
        let value = r
            .data
            .as_ref()
            .and_then(|d| d["character_string1"]["value"].as_str());
        match (by_user.get(to), value) {
            (Some(s), Some(v)) if s.order == v => {
                own += 1;
                if let Some(id) = r.msgid {
                    msgids.insert(s.message_id.as_str(), id);
                }
            }
            _ => wrong += 1,
        }
    }
    let twice = delivered.values().filter(|&&n| n > 1).count();
    let strangers = delivered
        .keys()
        .filter(|u| !by_user.get(**u).is_some_and(|s| s.popup.accepted()))
        .count();
    let republished = act.shoppers.iter().filter(|s| s.twice).count();
    let total: u64 = delivered.values().sum();
    out.push(check(
        twice == 0 && strangers == 0 && delivered.len() == accepted,
        format!(
            "each order reached WeChat at most once: {} messages delivered for {} orders \
             published {} times ({} twice); {} messageIds delivered twice, {} to users without \
             a consent",
            fmt_n(total),
            fmt_n(act.shoppers.len() as u64),
            fmt_n(act.published),
            fmt_n(republished as u64),
            twice,
            strangers
        ),
    ));
    out.push(check(
        wrong == 0 && own as u64 == total,
        format!(
            "each user saw their own order number ({} of {} messages; {} with another's or \
             none)",
            fmt_n(own as u64),
            fmt_n(total),
            wrong
        ),
    ));

    // Receipts: each message's outcome, and WeChat's deliveries.
    let mut outcome: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut delivered_receipts: HashMap<&str, Vec<Option<i64>>> = HashMap::new();
    let mut foreign = 0usize;
    // Receipts are at least once: how many came again, and for messages published once.
    let mut copies: HashMap<(&str, &str), u64> = HashMap::new();
    for (key, r) in &act.receipts {
        if let Some(id) = r["messageId"].as_str() {
            *copies.entry((key.as_str(), id)).or_default() += 1;
        }
    }
    let again: Vec<&str> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((_, id), _)| *id)
        .collect();
    let again_once = again
        .iter()
        .filter(|id| by_message.get(**id).is_some_and(|s| !s.twice))
        .count();
    for (key, r) in &act.receipts {
        let Some(id) = r["messageId"]
            .as_str()
            .filter(|id| by_message.contains_key(id))
        else {
            foreign += 1;
            continue;
        };
        if key == "message.delivered" {
            delivered_receipts
                .entry(id)
                .or_default()
                .push(r["msgid"].as_i64());
        } else {
            outcome.entry(id).or_default().insert(key.as_str());
        }
    }
    let (mut sent, mut no_credential, mut other) = (0usize, 0usize, 0usize);
    for s in &act.shoppers {
        let expected = if s.popup.accepted() {
            "message.sent"
        } else {
            "message.no_credential"
        };
        match outcome.get(s.message_id.as_str()) {
            Some(keys) if keys.len() == 1 && keys.contains(expected) => {
                if s.popup.accepted() {
                    sent += 1;
                } else {
                    no_credential += 1;
                }
            }
            _ => other += 1,
        }
    }
    out.push(check(
        other == 0 && foreign == 0,
        format!(
            "every message has its receipt: message.sent for {} of {} who accepted, \
             message.no_credential for {} of {} without a consent ({} missing or another \
             outcome, {} receipts for no order; {} came twice, as at-least-once allows, {} of \
             them for a message published once)",
            fmt_n(sent as u64),
            users(accepted),
            fmt_n(no_credential as u64),
            users(others),
            other,
            foreign,
            again.len(),
            again_once
        ),
    ));
    // Each delivered message has its `delivered` receipt with WeChat's msgid; a receipt may
    // come twice (at least once), never with another msgid or for a message not delivered.
    let matching = delivered_receipts
        .iter()
        .filter(|(id, got)| {
            let want = msgids.get(**id).copied();
            want.is_some() && got.iter().all(|m| *m == want)
        })
        .count();
    let delivered_total: usize = delivered_receipts.values().map(Vec::len).sum();
    out.push(check(
        matching as u64 == total && delivered_receipts.len() as u64 == total,
        format!(
            "delivered receipts match WeChat's deliveries: {} of {} with the msgid WeChat gave \
             ({} delivered receipts for {} messages; the {} delivery events WeChat pushed twice \
             were matched once)",
            fmt_n(matching as u64),
            fmt_n(total),
            fmt_n(delivered_total as u64),
            fmt_n(delivered_receipts.len() as u64),
            act.sent_pushed_twice
        ),
    ));
    out
}
