//! The demo's two campaigns: one spending formIds (`TPL_DEMO` to every generated user) and
//! one spending subscribe consents (`"kind": "subscribe"`, [`SUB_TEMPLATE`] to every user
//! holding a consent, `{"all": true}`); publishing each to `<ns>.campaigns` and following it
//! to completion with a progress line.
//!
//! This module owns the campaign messages and reading a campaign's record and outcome
//! counters. It must not judge the outcome (the checks do).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use serde_json::json;
use wxpush_broker::Topology;
use wxpush_roles::Deps;

use super::fleet::Fleet;
use super::population::Population;
use super::{
    fmt_n, fmt_secs, unix_ms, Setup, KEYWORDS, MAX_LIST_CAMPAIGN_BYTES, SUB_TEMPLATE, TEMPLATE,
};

/// Which of the demo's campaigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    FormId,
    Subscribe,
}

impl Which {
    pub(super) fn label(self) -> &'static str {
        match self {
            Which::FormId => "formId",
            Which::Subscribe => "subscribe",
        }
    }
}

/// A campaign message and what it should reach.
pub(super) struct Plan {
    pub which: Which,
    pub id: String,
    pub template: &'static str,
    pub body: Vec<u8>,
    /// The audience, in words.
    pub audience: String,
    /// Recipients the dispatcher should target: the listed openIds, or the users the bank
    /// holds a credential (or consent) for.
    pub audience_size: u64,
}

impl Plan {
    /// The formId campaign: every generated user by openId, or every reachable user
    /// (`{"all": true}`) when the list would be over [`MAX_LIST_CAMPAIGN_BYTES`].
    pub(super) fn form_id(population: &Population, stamp: i64) -> anyhow::Result<Self> {
        let id = format!("demo-{stamp}");
        let users = population.users.len() as u64;
        let mut campaign = json!({
            "campaignId": id,
            "templateId": TEMPLATE,
            "page": "pages/checkin/index?from=demo",
            "keywords": KEYWORDS,
            "emphasisKeyword": "keyword1.DATA",
            "audience": {"openIds": population.users.iter().map(|u| u.open_id.as_str()).collect::<Vec<_>>()},
        });
        let mut body = serde_json::to_vec(&campaign)?;
        if body.len() <= MAX_LIST_CAMPAIGN_BYTES {
            return Ok(Self {
                which: Which::FormId,
                id,
                template: TEMPLATE,
                audience: format!(
                    "{} openIds ({} bytes)",
                    fmt_n(users),
                    fmt_n(body.len() as u64)
                ),
                audience_size: users,
                body,
            });
        }
        campaign["audience"] = json!({"all": true});
        body = serde_json::to_vec(&campaign)?;
        Ok(Self {
            which: Which::FormId,
            id,
            template: TEMPLATE,
            body,
            audience: format!(
                "all users holding a formId, {{\"all\": true}} (a list of {} openIds would be \
                 over {} KiB)",
                fmt_n(users),
                MAX_LIST_CAMPAIGN_BYTES / 1024
            ),
            audience_size: population.reachable() as u64,
        })
    }

    /// The subscribe campaign: every user holding a consent for [`SUB_TEMPLATE`], with data
    /// within WeChat's limits (`thing` ≤ 20 characters, `character_string` ≤ 32).
    pub(super) fn subscribe(population: &Population, stamp: i64) -> anyhow::Result<Self> {
        let id = format!("demo-sub-{stamp}");
        let campaign = json!({
            "campaignId": id,
            "kind": "subscribe",
            "templateId": SUB_TEMPLATE,
            "page": "pages/order/detail?from=demo",
            "data": {"thing1": {"value": "Your order shipped"},
                     "character_string2": {"value": "SF1234567"}},
            "miniprogramState": "formal",
            "lang": "en_US",
            "audience": {"all": true},
        });
        Ok(Self {
            which: Which::Subscribe,
            id,
            template: SUB_TEMPLATE,
            body: serde_json::to_vec(&campaign)?,
            audience: "all users holding a consent, {\"all\": true}".into(),
            audience_size: population.consenting() as u64,
        })
    }
}

/// Publishes the campaign with confirms, `mandatory`: until the dispatcher has bound its
/// queue to `<ns>.campaigns` the broker returns it, and it is published again.
pub(super) async fn publish(
    deps: &Deps,
    topology: &Topology,
    body: &[u8],
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let ch = deps.broker.channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = topology.campaigns_exchange();
    let started = Instant::now();
    loop {
        fleet.check_running()?;
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                "demo".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => break,
            Confirmation::Nack(_) => bail!("RabbitMQ refused the campaign on {exchange}"),
            Confirmation::Ack(Some(_)) => {
                if started.elapsed() > Duration::from_secs(60) {
                    bail!("no dispatcher queue is bound to {exchange} after 60 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// What a campaign's records said when it completed.
pub(super) struct Progress {
    pub targeted: u64,
    pub counters: BTreeMap<String, u64>,
    /// First job (dispatch start) to last outcome.
    pub elapsed: Duration,
    /// Why the campaign was stopped (WeChat refused its data), if it was.
    pub stopped: Option<String>,
}

impl Progress {
    pub(super) fn get(&self, field: &str) -> u64 {
        self.counters.get(field).copied().unwrap_or(0)
    }

    pub(super) fn failed(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Messages WeChat took: sent, and sent but unconfirmed.
    pub(super) fn messages(&self) -> u64 {
        self.get("sent") + self.get("sent_unconfirmed")
    }

    /// Recipients with a final outcome (each counted once; see `wxpush_roles::outcomes`).
    pub(super) fn outcomes(&self) -> u64 {
        self.messages()
            + self.get("no_credential")
            + self.failed()
            + self.get("dead_lettered")
            + self.get("unknown")
            + self.get("stopped")
    }

    /// Jobs that reached their end: outcomes, and duplicate jobs skipped.
    pub(super) fn finished(&self) -> u64 {
        self.outcomes() + self.get("duplicate")
    }
}

/// Publishes the plan's campaign and follows it to completion, with a progress line on
/// stderr.
pub(super) async fn send(
    deps: &Deps,
    setup: &Setup,
    topology: &Topology,
    plan: &Plan,
    fleet: &mut Fleet,
) -> anyhow::Result<Progress> {
    let published_at = Instant::now();
    publish(deps, topology, &plan.body, fleet).await?;
    eprintln!(
        "demo: published the {} campaign {}: template {}, audience {}",
        plan.which.label(),
        plan.id,
        plan.template,
        plan.audience
    );
    let tty = std::io::stderr().is_terminal();
    let guard = Duration::from_secs(600)
        + Duration::from_secs(2 * plan.audience_size / u64::from(setup.rate));
    let mut last_line_at = Instant::now();
    loop {
        fleet.check_running()?;
        let seen = read(deps, setup, plan, published_at).await?;
        let line = seen.line(plan);
        if tty {
            eprint!("\r\x1b[Kdemo: {line}");
        } else if seen.complete || last_line_at.elapsed() >= Duration::from_secs(2) {
            eprintln!("demo: {line}");
            last_line_at = Instant::now();
        }
        if seen.complete {
            if tty {
                eprintln!();
            }
            return Ok(seen.progress);
        }
        if published_at.elapsed() > guard {
            if tty {
                eprintln!();
            }
            bail!(
                "campaign {} not complete after {} ({} of {} jobs finished, state {})",
                plan.id,
                fmt_secs(guard),
                seen.progress.finished(),
                seen.progress.targeted,
                seen.state
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One look at a campaign.
struct Seen {
    progress: Progress,
    complete: bool,
    state: String,
    /// Jobs finished per second since dispatch started.
    per_sec: f64,
}

impl Seen {
    /// "formId  42% 4,287/10,000 · sent 3,180 · no credential 1,107 · failed 0 · 971/s · ETA 5.88 s"
    fn line(&self, plan: &Plan) -> String {
        let p = &self.progress;
        let done = p.finished();
        let total = p.targeted.max(plan.audience_size).max(1);
        let eta = if self.per_sec > 0.0 && done < total {
            format!(
                "ETA {}",
                fmt_secs(Duration::from_secs_f64(
                    (total - done) as f64 / self.per_sec
                ))
            )
        } else {
            "ETA -".into()
        };
        format!(
            "{} {:>3}% {}/{} · sent {} · no credential {} · failed {} · {}/s · {eta}",
            plan.which.label(),
            done.min(total) * 100 / total,
            fmt_n(done),
            fmt_n(p.targeted),
            fmt_n(p.messages()),
            fmt_n(p.get("no_credential")),
            fmt_n(p.failed() + p.get("dead_lettered")),
            fmt_n(self.per_sec as u64),
        )
    }
}

/// Reads the campaign's record (`wxpush_bank::record`, written by the dispatcher) and outcome
/// counters (summed over the bank's shards).
async fn read(
    deps: &Deps,
    setup: &Setup,
    plan: &Plan,
    published_at: Instant,
) -> anyhow::Result<Seen> {
    let app = setup.config.apps.default_id();
    let camp = deps
        .bank
        .record(app, &plan.id)
        .snapshot()
        .await
        .context("Redis")?
        .unwrap_or_default();
    let mut counters: BTreeMap<String, u64> =
        wxpush_roles::outcomes::read(&deps.bank, app, &plan.id)
            .await
            .context("Redis")?
            .into_iter()
            .map(|(k, v)| (k, v.max(0) as u64))
            .collect();
    let last_at_ms = counters.remove("last_at_ms");
    let targeted = camp.targeted().unwrap_or(0);
    let started_ms = camp.started_at_ms();
    let since_start = match started_ms {
        Some(s) => Duration::from_millis(unix_ms().saturating_sub(s).max(0) as u64),
        None => published_at.elapsed(),
    };
    let mut progress = Progress {
        targeted,
        counters,
        elapsed: since_start,
        stopped: camp.stopped_reason(),
    };
    let state = camp.state().unwrap_or("none").to_owned();
    let done = progress.finished();
    let complete = (camp.is_dispatched() && done >= targeted) || progress.stopped.is_some();
    if complete {
        if let (Some(start), Some(last)) = (started_ms, last_at_ms) {
            progress.elapsed = Duration::from_millis((last as i64 - start).max(1) as u64);
        }
    }
    Ok(Seen {
        per_sec: done as f64 / since_start.as_secs_f64().max(0.001),
        progress,
        complete,
        state,
    })
}
