//! The demo's report: the generated users and their uploads, what ingest made of them, the
//! two campaigns side by side (outcomes, elapsed time, messages per second, what WeChat
//! accepted), the orders of act three (consents from WeChat's events, single messages, the
//! receipts by routing key), the checks, and how to run the same roles for real.
//!
//! This module owns the report's text. It must not judge anything (the checks do) nor read
//! anything (it is given what it shows).

use std::fmt::Write as _;
use std::time::Duration;

use super::campaign::{Plan, Progress, Which};
use super::checks::{Check, Deliveries};
use super::orders::{by_key, Act, Popup};
use super::population::{Answer, Kind, Population};
use super::{fmt_n, fmt_secs, per_sec, SUB_TEMPLATE, TEMPLATE};

/// One campaign as the report shows it.
pub(super) struct Shown<'a> {
    pub plan: &'a Plan,
    pub progress: &'a Progress,
    pub wechat: &'a Deliveries,
}

pub(super) struct Report<'a> {
    pub ns: &'a str,
    pub senders: u32,
    pub rate: u32,
    pub population: &'a Population,
    pub published_in: Duration,
    pub ingested_in: Duration,
    pub campaigns: [Shown<'a>; 2],
    pub token_fetches: u64,
    pub orders: &'a Act,
    /// The checks, by what they are about.
    pub checks: &'a [(String, Vec<Check>)],
}

/// Width of a row's label, and of each campaign's column.
const LABEL: usize = 26;
const COLUMN: usize = 12;

impl Report<'_> {
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        self.population_part(&mut out);
        self.campaigns_part(&mut out);
        self.orders_part(&mut out);
        self.checks_part(&mut out);
        closing(&mut out);
        out
    }

    fn population_part(&self, w: &mut String) {
        let p = self.population;
        let _ = writeln!(
            w,
            "\nwxpush demo: {} users, {} sender process{}, namespace {}, send rate {}/s\n",
            fmt_n(p.users.len() as u64),
            self.senders,
            if self.senders == 1 { "" } else { "es" },
            self.ns,
            fmt_n(u64::from(self.rate))
        );
        // The answers to the subscribe prompt start after the formId kinds' column.
        let _ = writeln!(
            w,
            "{:<width$}asked to subscribe to {SUB_TEMPLATE}",
            "Users",
            width = 2 + LABEL + COLUMN + 6
        );
        let kinds = [
            (Kind::Several, "several formIds (2-5)"),
            (Kind::One, "one formId"),
            (Kind::Expired, "only expired formIds"),
            (Kind::Nothing, "no formId"),
        ];
        let answers = [
            (Answer::Once, "accepted once"),
            (Answer::Twice, "accepted twice"),
            (Answer::Declined, "declined"),
            (Answer::NeverAsked, "never asked"),
        ];
        for ((kind, k_label), (answer, a_label)) in kinds.into_iter().zip(answers) {
            let _ = writeln!(
                w,
                "  {k_label:<LABEL$}{:>COLUMN$}      {a_label:<20}{:>10}",
                fmt_n(p.count(kind) as u64),
                fmt_n(p.answered(answer) as u64)
            );
        }
        let _ = writeln!(
            w,
            "  uploads: {} messages with {} formIds ({} sent again by a client, {} uploads with \
             formIds as a JSON string) and {} subscribe answers ({} alone, {} beside formIds); \
             WeChat granted the same {} consents",
            fmt_n(p.uploads.len() as u64),
            fmt_n(p.form_ids_uploaded as u64),
            fmt_n(p.resent as u64),
            fmt_n(p.as_string as u64),
            fmt_n(p.with_subscriptions as u64),
            fmt_n(p.subscriptions_only as u64),
            fmt_n((p.with_subscriptions - p.subscriptions_only) as u64),
            fmt_n(p.expected_consents)
        );
        let _ = writeln!(
            w,
            "  ingest: {} formIds and {} consents stored, {} uploads with only expired formIds \
             dead-lettered (as they should be), {} with only a declined answer kept nothing, {} \
             after publishing began (published in {}, {} uploads/s)",
            fmt_n(p.expected_stored),
            fmt_n(p.expected_consents),
            fmt_n(p.unusable_uploads as u64),
            fmt_n(p.declined_only as u64),
            fmt_secs(self.ingested_in),
            fmt_secs(self.published_in),
            fmt_n(per_sec(p.uploads.len() as u64, self.ingested_in))
        );
    }

    fn campaigns_part(&self, w: &mut String) {
        let _ = writeln!(w, "\nCampaigns (one after the other, on the same fleet)");
        for c in &self.campaigns {
            let kind = match c.plan.which {
                Which::FormId => "spends formIds",
                Which::Subscribe => "\"kind\": \"subscribe\", spends consents",
            };
            let _ = writeln!(
                w,
                "  {:<10} {}: template {} ({kind}), audience {}",
                c.plan.which.label(),
                c.plan.id,
                c.plan.template,
                c.plan.audience
            );
        }
        let [a, b] = &self.campaigns;
        let _ = writeln!(
            w,
            "\n  {:<LABEL$}{:>COLUMN$}{:>COLUMN$}",
            "",
            a.plan.which.label(),
            b.plan.which.label()
        );
        let mut row = |label: &str, cell: &dyn Fn(&Shown) -> Option<String>| {
            let show = |c: &Shown| cell(c).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                w,
                "  {label:<LABEL$}{:>COLUMN$}{:>COLUMN$}",
                show(a),
                show(b)
            );
        };
        let count = |field: &'static str| {
            move |c: &Shown| -> Option<String> { Some(fmt_n(c.progress.get(field))) }
        };
        let only = |which: Which, field: &'static str| {
            move |c: &Shown| -> Option<String> {
                (c.plan.which == which).then(|| fmt_n(c.progress.get(field)))
            }
        };
        row("targeted", &|c| Some(fmt_n(c.progress.targeted)));
        row("sent", &count("sent"));
        row(
            "sent, unconfirmed",
            &only(Which::FormId, "sent_unconfirmed"),
        );
        row("no credential", &count("no_credential"));
        row("failed", &|c| Some(fmt_n(c.progress.failed())));
        let mut codes: Vec<&String> = self
            .campaigns
            .iter()
            .flat_map(|c| c.progress.counters.keys())
            .filter(|k| k.starts_with("failed:"))
            .collect();
        codes.sort();
        codes.dedup();
        for code in codes {
            row(&format!("  {code}"), &|c| Some(fmt_n(c.progress.get(code))));
        }
        row("dead-lettered", &count("dead_lettered"));
        row("unknown (not resent)", &only(Which::Subscribe, "unknown"));
        row("stopped (not tried)", &only(Which::Subscribe, "stopped"));
        row("duplicate (skipped)", &count("duplicate"));
        row("retried attempts", &count("retried"));
        row("elapsed", &|c| Some(fmt_secs(c.progress.elapsed)));
        row("messages/s", &|c| {
            Some(fmt_n(per_sec(c.progress.messages(), c.progress.elapsed)))
        });
        row("jobs/s", &|c| {
            Some(fmt_n(per_sec(c.progress.finished(), c.progress.elapsed)))
        });
        row("WeChat send calls", &|c| Some(fmt_n(c.wechat.calls)));
        row("WeChat accepted", &|c| Some(fmt_n(c.wechat.accepted())));
        let _ = writeln!(
            w,
            "  (elapsed: first job to last outcome; {} access token fetch{} for both)",
            self.token_fetches,
            if self.token_fetches == 1 { "" } else { "es" }
        );
    }

    fn orders_part(&self, w: &mut String) {
        let a = self.orders;
        let _ = writeln!(
            w,
            "\nOrders shipped (app {}: consent_source = \"events\", message push in secure \
             mode; one single message per order to <ns>.messages)",
            a.app
        );
        let count = |p: &dyn Fn(Popup) -> bool| {
            fmt_n(a.shoppers.iter().filter(|s| p(s.popup)).count() as u64)
        };
        let republished = a.shoppers.iter().filter(|s| s.twice).count() as u64;
        let accepted_sends = a.sends.iter().filter(|r| r.errcode == Some(0)).count() as u64;
        let mut row = |label: &str, value: String, note: String| {
            let _ = writeln!(w, "  {label:<LABEL$}{value:>COLUMN$}  {note}");
        };
        row(
            "shoppers",
            fmt_n(a.shoppers.len() as u64),
            format!("asked to subscribe to {SUB_TEMPLATE} in the app"),
        );
        row(
            "accepted (popup event)",
            count(&|p| p.accepted()),
            format!(
                "{} of them pushed twice by WeChat",
                count(&|p| p == Popup::AcceptedPushedTwice)
            ),
        );
        row(
            "declined (popup event)",
            count(&|p| p == Popup::Declined),
            String::new(),
        );
        row(
            "never asked",
            count(&|p| p == Popup::NeverAsked),
            String::new(),
        );
        row(
            "messages published",
            fmt_n(a.published),
            format!(
                "{} orders, {} published twice, over {}",
                fmt_n(a.shoppers.len() as u64),
                fmt_n(republished),
                fmt_secs(a.shipped_in)
            ),
        );
        row(
            "WeChat send calls",
            fmt_n(a.sends.len() as u64),
            String::new(),
        );
        row("WeChat accepted", fmt_n(accepted_sends), String::new());
        row(
            "delivery events pushed",
            fmt_n(a.sent_pushes),
            format!("{} pushed twice by WeChat", a.sent_pushed_twice),
        );
        let _ = writeln!(
            w,
            "  receipts on <ns>.receipts, by routing key (at least once: one may come twice)"
        );
        for (key, (n, messages)) in by_key(&a.receipts) {
            let _ = writeln!(
                w,
                "    {key:<width$}{:>COLUMN$}  for {} message{}",
                fmt_n(n),
                fmt_n(messages),
                if messages == 1 { "" } else { "s" },
                width = LABEL - 2
            );
        }
    }

    fn checks_part(&self, w: &mut String) {
        let _ = writeln!(w, "\nChecks");
        for (about, checks) in self.checks {
            let _ = writeln!(w, "  {about}");
            for c in checks {
                let _ = writeln!(w, "    {} {}", if c.ok { "✓" } else { "✗" }, c.text);
            }
        }
    }
}

/// How to run the same roles for real: commands that work when pasted into a shell after
/// `scripts/demo.sh` (the binary's own directory on `PATH`, an appid and secret the fake
/// accepts, no other variable needed: several roles on one host share the defaults).
fn closing(w: &mut String) {
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_else(|| "target/release".to_owned());
    let _ = write!(
        w,
        "\nThe same roles run as separate processes, as many of each as you like, against any \
         Redis and RabbitMQ (WXPUSH_REDIS_URL, WXPUSH_AMQP_URL). Pasted into a shell, this \
         runs them against a fake WeChat (leave out its two lines to send for real, with your \
         mini program's appid and secret):\n\
         \n  export PATH=\"{bin_dir}:$PATH\" WXPUSH_APP_ID={TRY_APP_ID} WXPUSH_APP_SECRET={TRY_SECRET}\
         \n  wxpush mock-wechat --listen {TRY_FAKE} --template {TEMPLATE} --template {SUB_TEMPLATE} &\
         \n  export WXPUSH_WECHAT_API_BASE=http://{TRY_FAKE}\
         \n  wxpush ingest &  wxpush dispatch &  wxpush send &  wxpush send &\
         \n\nthen publish uploads (formIds, subscriptions) to the exchange wxpush.formids and \
         campaigns to wxpush.campaigns, and follow each with `wxpush campaign status \
         <campaignId> --watch` (the fake accepts the formIds and consents it issued: POST \
         /fake/formids, /fake/consents). Each role serves /metrics on the first free port from \
         9464 (its log says which). SIGTERM stops a role gracefully. See the README.\n"
    );
}

/// The appid, secret and fake WeChat address of the closing commands.
pub const TRY_APP_ID: &str = "wxdemo0000000000";
pub const TRY_SECRET: &str = "try-it-secret";
pub const TRY_FAKE: &str = "127.0.0.1:8089";
