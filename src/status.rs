//! `wxpush campaign status ID [--app APPID] [--json] [--watch]`: a campaign's progress and
//! outcome counts.
//!
//! A campaign is known by its app and id (two apps may each run a campaign `ID`). Without
//! `--app`, every app of the install is looked at: the one holding `ID` is shown, and if
//! several do, the command asks for `--app` rather than pick one.
//!
//! Reads the two hashes of a campaign (their fields: docs/campaigns.md) through the bank
//! ([`wxpush_bank::Bank::campaign_hashes`]): the record, written by the dispatcher (app,
//! template, state, targeted, times), and the outcome counters the senders' scripts keep
//! beside each shard's users (summed here; see `wxpush_bank` campaign.rs). The record's field
//! names are `wxpush_bank::record`'s. On a single Redis node both are read in one atomic round
//! trip (MULTI/EXEC), so every figure shown belongs to the same moment; on a Redis Cluster,
//! shard by shard (what that means: the bank's doc). From them it derives
//! what the contract promises a status shows: recipients targeted, sent, skipped for want of a
//! credential, failed (by WeChat error code), and still pending
//! (`pending = max(0, targeted - final outcomes)`, `complete = dispatched && pending == 0`).
//!
//! Output: a compact table (default), one JSON object (`--json`), or with `--watch` a live
//! one-line progress bar on stderr (a JSON line per refresh on stdout with `--json`) until the
//! campaign completes or Ctrl-C.
//!
//! Counters may exist without the record (jobs published straight to `<ns>.send`): the state
//! is then unknown, and so are targeted and pending. A field that does not parse is counted
//! as 0 (or unknown) and reported as a warning, never a panic.
//!
//! This module must not write to Redis: status is read-only, it never creates, extends or
//! repairs a key. It must not decide outcomes either (that is the senders'); it only reads the
//! field names of the format.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use wxpush_bank::record::{self, field};
use wxpush_bank::Bank;
use wxpush_domain::{AppId, Config};

/// How often `--watch` redraws.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// The window of the moving rate shown by `--watch`.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// How long `--watch` keeps retrying while Redis does not answer before giving up.
const WATCH_OUTAGE_LIMIT: Duration = Duration::from_secs(30);
/// Connecting to Redis, and each read, give up after this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// Width of the `--watch` progress bar, in characters.
const BAR_WIDTH: u64 = 20;

pub async fn run(
    config: &Config,
    id: &str,
    app: Option<&str>,
    json: bool,
    watch: bool,
) -> anyhow::Result<()> {
    let mut reader = Reader::new(config)?;
    let first = match app.filter(|a| !a.is_empty()) {
        Some(app) => {
            reader.app = wxpush_domain::AppId::new(app).map_err(|e| anyhow!("--app: {e}"))?;
            reader
                .read_required(id)
                .await
                .map_err(|e| anyhow!("{e:#} ({})", crate::configured_apps(config)))?
        }
        None => reader.find(config, id).await?,
    };
    if watch {
        return watch_loop(&mut reader, id, json, first).await;
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", first.to_json(None))?;
    } else {
        write!(out, "{}", first.table())?;
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Reads a campaign's two hashes; reconnects after a failure. (`wxpush message status`
/// connects through it too.)
pub(crate) struct Reader {
    /// The Redis URL(s), as configured.
    config_url: wxpush_domain::SecretUrl,
    /// The Redis URL with any password redacted, for errors.
    url: String,
    ca_pem: Option<Vec<u8>>,
    ns: String,
    namespace: wxpush_domain::Namespace,
    app: wxpush_domain::AppId,
    bank: Option<Bank>,
}

impl Reader {
    pub(crate) fn new(config: &Config) -> anyhow::Result<Self> {
        let ca_pem =
            match &config.tls_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    anyhow!("cannot read WXPUSH_TLS_CA_FILE {}: {e}", path.display())
                })?),
                None => None,
            };
        Ok(Self {
            config_url: config.redis_url.clone(),
            url: config.redis_url.redacted(),
            ca_pem,
            ns: config.namespace.to_string(),
            namespace: config.namespace.clone(),
            app: config.apps.default_id().clone(),
            bank: None,
        })
    }

    /// A reader on a bank already connected (the dashboard's, shared by its requests).
    pub(crate) fn with_bank(config: &Config, bank: Bank) -> anyhow::Result<Self> {
        let mut reader = Self::new(config)?;
        reader.bank = Some(bank);
        Ok(reader)
    }

    /// The bank, connected once (its connection reconnects by itself).
    pub(crate) async fn connection(&mut self) -> anyhow::Result<Bank> {
        if let Some(bank) = &self.bank {
            return Ok(bank.clone());
        }
        let connecting = Bank::connect_tls(
            self.config_url.expose(),
            self.namespace.clone(),
            Default::default(),
            self.ca_pem.as_deref(),
        );
        let bank = tokio::time::timeout(REDIS_TIMEOUT * 2, connecting)
            .await
            .map_err(|_| anyhow!("cannot connect to Redis at {}: timed out", self.url))?
            .map_err(|e| {
                anyhow!(
                    "cannot connect to Redis at {}: {}",
                    self.url,
                    self.config_url.scrub(&e.to_string())
                )
            })?;
        self.bank = Some(bank.clone());
        Ok(bank)
    }

    /// `app`'s campaign `id` as it is now; `None` when neither hash exists (the dashboard's
    /// reading: the same as `campaign status`'s).
    pub(crate) async fn read_of(
        &mut self,
        app: &AppId,
        id: &str,
    ) -> anyhow::Result<Option<Snapshot>> {
        self.app = app.clone();
        self.read(id).await
    }

    /// The campaign as it is now; `None` when neither hash exists.
    async fn read(&mut self, id: &str) -> anyhow::Result<Option<Snapshot>> {
        let bank = self.connection().await?;
        let query = bank.campaign_hashes(&self.app, id);
        let result = match tokio::time::timeout(REDIS_TIMEOUT + Duration::from_secs(1), query).await
        {
            Ok(Ok(hashes)) => Ok(hashes),
            Ok(Err(e)) => Err(anyhow!(
                "cannot read campaign {id} from Redis at {}: {}",
                self.url,
                self.config_url.scrub(&e.to_string())
            )),
            Err(_) => Err(anyhow!(
                "cannot read campaign {id} from Redis at {}: timed out",
                self.url
            )),
        };
        let (camp, cs) = match result {
            Ok((camp, shards)) => (camp, sum_shards(shards)),
            Err(e) => {
                // Start afresh next time.
                self.bank = None;
                return Err(e);
            }
        };
        if camp.is_empty() && cs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Snapshot::from_hashes(
            id,
            &text_map(camp),
            &text_map(cs),
            now_ms(),
        )))
    }

    async fn read_required(&mut self, id: &str) -> anyhow::Result<Snapshot> {
        self.read(id).await?.with_context(|| {
            format!(
                "no campaign {id} of app {} in namespace {}",
                self.app, self.ns
            )
        })
    }

    /// The campaign `id` of whichever configured app holds it (the reader then follows that
    /// app); an error when none does, or when several do (`--app` then says which).
    async fn find(&mut self, config: &Config, id: &str) -> anyhow::Result<Snapshot> {
        let mut found = Vec::new();
        for app in config.apps.iter() {
            self.app = app.id.clone();
            if let Some(s) = self.read(id).await? {
                found.push((app.id.clone(), s));
            }
        }
        if found.is_empty() && config.apps.len() == 1 {
            self.app = config.apps.default_id().clone();
            return self.read_required(id).await;
        }
        let apps: Vec<&AppId> = found.iter().map(|(a, _)| a).collect();
        let i = crate::the_app_holding(config, id, &apps)?;
        let (app, snapshot) = found.swap_remove(i);
        self.app = app;
        Ok(snapshot)
    }
}

/// The counters of every shard as one hash: numbers summed, `last_at_ms` the latest, anything
/// that is not a number kept as found (reported later as junk).
fn sum_shards(shards: Vec<HashMap<Vec<u8>, Vec<u8>>>) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut total: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for shard in shards {
        for (field, value) in shard {
            let parse = |v: &[u8]| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
            };
            let merged = match (total.get(&field).map(|v| parse(v)), parse(&value)) {
                (None, _) => value,
                (Some(Some(a)), Some(b)) if field == b"last_at_ms" => {
                    a.max(b).to_string().into_bytes()
                }
                (Some(Some(a)), Some(b)) => (a + b).to_string().into_bytes(),
                _ => value,
            };
            total.insert(field, merged);
        }
    }
    total
}

fn text_map(raw: HashMap<Vec<u8>, Vec<u8>>) -> BTreeMap<String, String> {
    raw.into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The snapshot and what derives from it

/// One campaign at one moment: the record (if any), the counters, and what follows from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    campaign_id: String,
    /// When it was read (Unix ms, this machine's clock).
    at_ms: i64,
    /// Whether `<ns>:camp:<id>` exists (a dispatcher fanned this campaign out).
    has_record: bool,
    app: Option<String>,
    template_id: Option<String>,
    audience: Option<String>,
    /// `template` or `subscribe`, as the dispatcher recorded it.
    kind: Option<String>,
    /// The record's `state` as written ("dispatching", "dispatched").
    record_state: Option<String>,
    /// Jobs published; unknown without a record (or when unreadable).
    targeted: Option<u64>,
    /// Invalid openIds of an explicit list (a count, or the length of a JSON list).
    rejected_recipients: Option<u64>,
    started_at_ms: Option<i64>,
    dispatched_at_ms: Option<i64>,
    sent: u64,
    sent_unconfirmed: u64,
    no_credential: u64,
    /// `failed:<errcode>` → count, by code as written.
    failed: BTreeMap<String, u64>,
    dead_lettered: u64,
    /// Subscribe sends whose outcome WeChat left unknown (not resent).
    unknown: u64,
    /// Recipients whose own data was refused at dispatch (contract 8.1): not sent.
    invalid_data: u64,
    /// Recipients not sent because an operator cancelled the campaign (contract 8.5).
    cancelled: u64,
    /// Recipients not sent because their app's quiet hours held them and the campaign said
    /// `"quietHours": "skip"` (contract 8.5).
    skipped_quiet_hours: u64,
    /// Recipients held for quiet hours (counted when first held; a figure, not an outcome:
    /// each gets its outcome when it goes out).
    deferred: u64,
    /// Recipients not sent because they were at the app's frequency cap (contract 8.5).
    capped: u64,
    /// An operator paused it (and has not resumed it) / cancelled it.
    paused: bool,
    cancelled_by_operator: bool,
    /// A campaign sent in parts: (received, dispatched, parts).
    parts: Option<(u64, u64, u64)>,
    /// Its `sendAt` (contract 8.5), Unix ms, when it was given one.
    send_at_ms: Option<i64>,
    /// Why the campaign was stopped (its data refused by WeChat, `47003`), if it was: the
    /// jobs still queued then are not sent.
    stopped_reason: Option<String>,
    duplicate: u64,
    retried: u64,
    /// Dead-lettered recipients queued again by `wxpush campaign retry` (their new outcome
    /// is counted where it lands; this is how many were re-queued, over every run).
    requeued: u64,
    last_at_ms: Option<i64>,
    /// Every counter that is a count, by its name as written (summed over the shards), those
    /// this version names above and any other (added by a newer sender): what the dashboard
    /// shows, generic over the names. Not `last_at_ms`, not the sends by time.
    pub(crate) counters: BTreeMap<String, u64>,
    /// Sends by time: (start of the bucket, Unix s; sends in it), oldest first
    /// ([`wxpush_bank::Bank::campaign_rates`]); read by the dashboard's campaign page only,
    /// empty elsewhere.
    pub(crate) sends_by_time: Vec<(i64, u64)>,
    /// Every time the record holds (its fields named `*_at_ms`: started, dispatched, paused,
    /// a schedule...), by field name: the dashboard's schedule, generic over the names.
    pub(crate) record_times: BTreeMap<String, i64>,
    /// Fields that could not be read, and other oddities worth a line.
    warnings: Vec<String>,
}

impl Snapshot {
    fn from_hashes(
        id: &str,
        camp: &BTreeMap<String, String>,
        cs: &BTreeMap<String, String>,
        at_ms: i64,
    ) -> Self {
        let mut s = Snapshot {
            campaign_id: id.to_owned(),
            at_ms,
            has_record: !camp.is_empty(),
            ..Default::default()
        };
        let text = |k: &str| camp.get(k).filter(|v| !v.is_empty()).cloned();
        s.record_times = camp
            .iter()
            .filter(|(k, _)| k.ends_with("_at_ms") && k.as_str() != field::LEASE_UNTIL_MS)
            .filter_map(|(k, v)| Some((k.clone(), v.trim().parse::<i64>().ok()?)))
            .collect();
        s.app = text(field::APP);
        s.template_id = text(field::TEMPLATE_ID);
        s.kind = text(field::KIND);
        s.audience = text(field::AUDIENCE);
        s.record_state = text(field::STATE);
        s.paused = camp.contains_key(field::PAUSED_AT_MS);
        s.cancelled_by_operator = camp.contains_key(field::CANCELLED_AT_MS);
        if camp.contains_key(field::STOPPED_AT_MS) {
            s.stopped_reason =
                Some(text(field::STOPPED_REASON).unwrap_or_else(|| "stopped".into()));
        }
        if s.has_record {
            // Absent until the dispatcher's first confirmed batch: nothing published yet.
            s.targeted = match camp.get(field::TARGETED) {
                None => Some(0),
                Some(v) => parse_count(&mut s.warnings, "camp", field::TARGETED, v),
            };
            s.rejected_recipients = camp.get(field::REJECTED_RECIPIENTS).and_then(|v| {
                v.trim().parse::<u64>().ok().or_else(|| {
                    serde_json::from_str::<Value>(v)
                        .ok()
                        .and_then(|j| j.as_array().map(|a| a.len() as u64))
                })
            });
            let count = |f: &str| camp.get(f).and_then(|v| v.trim().parse::<u64>().ok());
            s.parts = count(field::PARTS).map(|n| {
                (
                    count(field::PARTS_RECEIVED).unwrap_or(0),
                    count(field::PARTS_DISPATCHED).unwrap_or(0),
                    n,
                )
            });
            s.started_at_ms = camp
                .get(field::STARTED_AT_MS)
                .and_then(|v| parse_time(&mut s.warnings, "camp", field::STARTED_AT_MS, v));
            s.dispatched_at_ms = camp
                .get(field::DISPATCHED_AT_MS)
                .and_then(|v| parse_time(&mut s.warnings, "camp", field::DISPATCHED_AT_MS, v));
            s.send_at_ms = camp
                .get(field::SEND_AT_MS)
                .and_then(|v| parse_time(&mut s.warnings, "camp", field::SEND_AT_MS, v));
        }
        for (field, value) in cs {
            // Sends by time, written here by the version before they had a key of their own.
            if field.starts_with(wxpush_bank::RATE_FIELD_PREFIX) {
                continue;
            }
            if field != "last_at_ms" {
                if let Ok(n) = value.trim().parse::<u64>() {
                    s.counters.insert(field.clone(), n);
                }
            }
            let slot = match field.as_str() {
                "sent" => &mut s.sent,
                "sent_unconfirmed" => &mut s.sent_unconfirmed,
                "no_credential" => &mut s.no_credential,
                "dead_lettered" => &mut s.dead_lettered,
                "unknown" => &mut s.unknown,
                "invalid_data" => &mut s.invalid_data,
                "cancelled" => &mut s.cancelled,
                "skipped_quiet_hours" => &mut s.skipped_quiet_hours,
                "deferred" => &mut s.deferred,
                "capped" => &mut s.capped,
                "duplicate" => &mut s.duplicate,
                "retried" => &mut s.retried,
                "requeued" => &mut s.requeued,
                "last_at_ms" => {
                    s.last_at_ms = parse_time(&mut s.warnings, "cs", field, value);
                    continue;
                }
                f => match f.strip_prefix("failed:") {
                    Some(code) => {
                        let n = parse_count(&mut s.warnings, "cs", field, value).unwrap_or(0);
                        let total = s.failed.entry(code.to_owned()).or_insert(0);
                        *total = total.saturating_add(n);
                        continue;
                    }
                    // A field this version does not know: not an outcome it can place.
                    None => continue,
                },
            };
            *slot = parse_count(&mut s.warnings, "cs", field, value).unwrap_or(0);
        }
        if s.record_state.as_deref() == Some(record::DISPATCHED) {
            if let Some(t) = s.targeted {
                let done = s.final_outcomes();
                if done > t {
                    s.warnings.push(format!(
                        "final outcomes ({done}) exceed jobs targeted ({t}): counted twice?"
                    ));
                }
            }
        }
        s
    }

    fn failed_total(&self) -> u64 {
        self.failed.values().fold(0u64, |a, n| a.saturating_add(*n))
    }

    /// Recipients that reached an outcome (each counted once; retries and duplicate jobs are
    /// not outcomes).
    pub(crate) fn final_outcomes(&self) -> u64 {
        [
            self.sent,
            self.sent_unconfirmed,
            self.no_credential,
            self.failed_total(),
            self.dead_lettered,
            self.unknown,
            self.invalid_data,
            self.cancelled,
            self.skipped_quiet_hours,
            self.capped,
        ]
        .iter()
        .fold(0u64, |a, n| a.saturating_add(*n))
    }

    pub(crate) fn pending(&self) -> Option<u64> {
        self.targeted
            .map(|t| t.saturating_sub(self.final_outcomes()))
    }

    /// Distinct users the campaign was fanned out to (the dispatcher counts each page once).
    fn recipients(&self) -> Option<u64> {
        self.targeted
    }

    /// Every recipient has an outcome, or the campaign was stopped (its remaining jobs are
    /// not sent), or cancelled while scheduled (none will be).
    pub(crate) fn complete(&self) -> bool {
        self.has_record
            && (self.stopped_reason.is_some()
                || self.cancelled_while_scheduled()
                || (self.record_state.as_deref() == Some(record::DISPATCHED)
                    && self.pending() == Some(0)))
    }

    /// Still waiting for its `sendAt` (scheduled, or paused then): the time, and how far off.
    fn waiting_for_its_time(&self) -> Option<String> {
        let t = self.send_at_ms?;
        if self.record_state.as_deref() != Some(record::SCHEDULED) || self.cancelled_by_operator {
            return None;
        }
        Some(match t.saturating_sub(self.at_ms) {
            left if left > 0 => format!(
                "{} ({t}), in {}",
                iso_utc(t),
                format_duration(left as f64 / 1000.0)
            ),
            _ => format!("{} ({t}), due", iso_utc(t)),
        })
    }

    /// An operator cancelled it before its `sendAt`: nothing was, or will be, fanned out.
    fn cancelled_while_scheduled(&self) -> bool {
        self.cancelled_by_operator && self.record_state.as_deref() == Some(record::SCHEDULED)
    }

    /// "scheduled", "dispatching", "dispatched", "complete", or what the record says;
    /// "unknown" without it.
    pub(crate) fn state(&self) -> &str {
        if !self.has_record {
            "unknown"
        } else if self.stopped_reason.is_some() {
            "stopped"
        } else if self.cancelled_while_scheduled() {
            "cancelled"
        } else if self.complete() {
            "complete"
        } else if self.cancelled_by_operator {
            "cancelled"
        } else if self.paused {
            "paused"
        } else {
            self.record_state.as_deref().unwrap_or("unknown")
        }
    }

    fn delivered(&self) -> u64 {
        self.sent.saturating_add(self.sent_unconfirmed)
    }

    fn finished_at_ms(&self) -> Option<i64> {
        if self.complete() {
            self.last_at_ms
        } else {
            None
        }
    }

    /// From start to finish (complete) or to now (not yet).
    fn elapsed_ms(&self) -> Option<i64> {
        let start = self.started_at_ms?;
        let end = if self.complete() {
            self.finished_at_ms()?
        } else {
            self.at_ms
        };
        Some(end.saturating_sub(start).max(0))
    }

    /// Messages sent (confirmed or not) per second over the elapsed time.
    fn sent_per_sec(&self) -> Option<f64> {
        let ms = self.elapsed_ms()?;
        (ms > 0).then(|| self.delivered() as f64 * 1000.0 / ms as f64)
    }

    /// Failed counts ordered by numeric code (codes that are not numbers last).
    pub(crate) fn failed_by_code(&self) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.failed.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        v.sort_by_key(|(c, _)| (c.parse::<i64>().map_or((1, 0), |n| (0, n)), c.to_string()));
        v
    }

    pub(crate) fn to_json(&self, live: Option<&Live>) -> Value {
        let by_code: serde_json::Map<String, Value> = self
            .failed
            .iter()
            .map(|(c, n)| (c.clone(), json!(n)))
            .collect();
        let mut out = json!({
            "campaign_id": self.campaign_id,
            "app": self.app,
            "template_id": self.template_id,
            "kind": self.kind,
            "audience": self.audience,
            "state": self.state(),
            "has_dispatch_record": self.has_record,
            "targeted": self.targeted,
            "recipients": self.recipients(),
            "rejected_recipients": self.rejected_recipients,
            "sent": self.sent,
            "sent_unconfirmed": self.sent_unconfirmed,
            "no_credential": self.no_credential,
            "failed": { "total": self.failed_total(), "by_code": by_code },
            "dead_lettered": self.dead_lettered,
            "unknown": self.unknown,
            "invalid_data": self.invalid_data,
            "cancelled": self.cancelled,
            "capped": self.capped,
            "paused": self.paused,
            "cancelled_by_operator": self.cancelled_by_operator,
            "parts": self.parts.map(|(received, dispatched, total)| json!({
                "received": received, "dispatched": dispatched, "total": total
            })),
            "stopped_reason": self.stopped_reason,
            "send_at_ms": self.send_at_ms,
            "send_at": self.send_at_ms.map(iso_utc),
            "duplicate": self.duplicate,
            "retried": self.retried,
            "requeued": self.requeued,
            "pending": self.pending(),
            "started_at_ms": self.started_at_ms,
            "dispatched_at_ms": self.dispatched_at_ms,
            "last_at_ms": self.last_at_ms,
            "finished_at_ms": self.finished_at_ms(),
            "elapsed_ms": self.elapsed_ms(),
            "sent_per_sec": self.sent_per_sec().map(round2),
            "moving_rate_per_sec": live.and_then(|l| l.rate).map(round2),
            "eta_secs": live.and_then(|l| l.eta_secs(self)).map(round2),
            "complete": self.complete(),
            "at_ms": self.at_ms,
            "warnings": self.warnings,
        });
        // Quiet hours (contract 8.5), added here: one macro of every key passes its
        // recursion limit.
        if let Some(o) = out.as_object_mut() {
            o.insert(
                "skipped_quiet_hours".into(),
                json!(self.skipped_quiet_hours),
            );
            o.insert("deferred".into(), json!(self.deferred));
        }
        out
    }

    fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let or_unknown = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        row("campaign", self.campaign_id.clone());
        row("app", or_dash(&self.app));
        row("template", or_dash(&self.template_id));
        if let Some(k) = &self.kind {
            row("kind", k.clone());
        }
        if let Some(a) = &self.audience {
            row("audience", a.clone());
        }
        row(
            "state",
            if self.has_record {
                self.state().to_owned()
            } else {
                "unknown (no dispatch record)".to_owned()
            },
        );
        if let Some(t) = self.send_at_ms {
            let when = self
                .waiting_for_its_time()
                .unwrap_or_else(|| format!("{} ({t})", iso_utc(t)));
            row("send at", when);
        }
        if let Some((received, dispatched, total)) = self.parts {
            row(
                "parts",
                format!("received {received}/{total}, dispatched {dispatched}/{total}"),
            );
        }
        row("targeted", or_unknown(self.targeted));
        row("recipients", or_unknown(self.recipients()));
        if let Some(n) = self.rejected_recipients.filter(|n| *n > 0) {
            row("rejected (invalid)", n.to_string());
        }
        row("sent", self.sent.to_string());
        row("sent (unconfirmed)", self.sent_unconfirmed.to_string());
        row("no credential", self.no_credential.to_string());
        row("failed", self.failed_total().to_string());
        for (code, n) in self.failed_by_code() {
            let label = match code.parse::<i64>().ok().and_then(code_meaning) {
                Some(m) => format!("  {code} ({m})"),
                None => format!("  {code}"),
            };
            row(&label, n.to_string());
        }
        row("dead-lettered", self.dead_lettered.to_string());
        if self.unknown > 0 {
            row("unknown (subscribe, not resent)", self.unknown.to_string());
        }
        if self.invalid_data > 0 {
            row("invalid data (not sent)", self.invalid_data.to_string());
        }
        if self.cancelled > 0 || self.cancelled_by_operator {
            row("cancelled (not sent)", self.cancelled.to_string());
        }
        if self.skipped_quiet_hours > 0 {
            row(
                "skipped (quiet hours)",
                self.skipped_quiet_hours.to_string(),
            );
        }
        if self.deferred > 0 {
            row("deferred (quiet hours)", self.deferred.to_string());
        }
        if self.capped > 0 {
            row("capped (frequency cap, not sent)", self.capped.to_string());
        }
        if let Some(reason) = &self.stopped_reason {
            row("stopped", reason.clone());
        }
        row("duplicates skipped", self.duplicate.to_string());
        row("retried", self.retried.to_string());
        if self.requeued > 0 {
            row("requeued (campaign retry)", self.requeued.to_string());
        }
        row("pending", or_unknown(self.pending()));
        let time = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), format_utc);
        row("started", time(self.started_at_ms));
        row("dispatched", time(self.dispatched_at_ms));
        if self.complete() {
            row("finished", time(self.finished_at_ms()));
        } else {
            row("finished", "-".to_owned());
            if let Some(t) = self.last_at_ms {
                row("last outcome", format_utc(t));
            }
        }
        if let Some(ms) = self.elapsed_ms() {
            row("elapsed", format_duration(ms as f64 / 1000.0));
        }
        if let Some(r) = self.sent_per_sec() {
            row("rate", format!("{} sent/s", format_rate(r)));
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &rows {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// A counter's value; junk becomes a warning and `None`.
fn parse_count(warnings: &mut Vec<String>, hash: &str, field: &str, value: &str) -> Option<u64> {
    match value.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            warnings.push(format!(
                "{hash} field {field} is not a count: {:?} (ignored)",
                clip(value)
            ));
            None
        }
    }
}

/// A Unix-ms time; junk becomes a warning and `None`.
fn parse_time(warnings: &mut Vec<String>, hash: &str, field: &str, value: &str) -> Option<i64> {
    match value.trim().parse::<i64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            warnings.push(format!(
                "{hash} field {field} is not a Unix time in ms: {:?} (ignored)",
                clip(value)
            ));
            None
        }
    }
}

/// What WeChat's error codes mean (those wxpush knows; see docs/sending.md).
pub(crate) fn code_meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        -1 => "WeChat busy",
        40001 => "bad access token",
        40003 => "bad openId",
        40014 => "malformed access token",
        40037 => "bad template",
        41028 => "formId invalid or expired",
        41029 => "formId already used",
        41030 => "bad page",
        42001 => "access token expired",
        43101 => "user refused",
        45009 => "daily quota",
        45011 => "minute quota",
        47003 => "bad template data",
        48001 => "API not authorised",
        _ => return None,
    })
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        let head: String = s.chars().take(40).collect();
        format!("{head}…")
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// --watch

/// What `--watch` knows beyond one snapshot: the moving rate.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// (when, final outcomes) over the last [`RATE_WINDOW`].
    samples: VecDeque<(Instant, u64)>,
    /// Final outcomes per second over the window; `None` until two samples apart.
    rate: Option<f64>,
}

impl Live {
    pub(crate) fn observe(&mut self, at: Instant, done: u64) {
        // A count going down means the counters were reset: start the window afresh.
        if self.samples.back().is_some_and(|(_, d)| *d > done) {
            self.samples.clear();
        }
        self.samples.push_back((at, done));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        self.rate = match (self.samples.front(), self.samples.back()) {
            (Some((t0, d0)), Some((t1, d1))) => {
                let secs = t1.duration_since(*t0).as_secs_f64();
                (secs >= 0.25).then(|| d1.saturating_sub(*d0) as f64 / secs)
            }
            _ => None,
        };
    }

    fn eta_secs(&self, s: &Snapshot) -> Option<f64> {
        let pending = s.pending()?;
        if pending == 0 {
            return Some(0.0);
        }
        let rate = self.rate.filter(|r| *r > 0.0)?;
        Some(pending as f64 / rate)
    }

    fn bar(&self, s: &Snapshot) -> String {
        if let Some(when) = s.waiting_for_its_time() {
            return format!("{}: sends at {when}", s.state());
        }
        let done = s.final_outcomes();
        let mut line = match s.targeted {
            Some(t) => {
                let shown = done.min(t);
                let share = |scale: u64| {
                    (u128::from(shown) * u128::from(scale))
                        .checked_div(u128::from(t))
                        .map_or(0, |x| x as u64)
                };
                let (pct, filled) = (share(100), share(BAR_WIDTH));
                format!(
                    "[{}{}] {pct:>3}% {done}/{t}",
                    "#".repeat(filled as usize),
                    ".".repeat((BAR_WIDTH - filled) as usize)
                )
            }
            None => format!("done {done} (no dispatch record)"),
        };
        line.push_str(&format!(
            "  sent {}  no cred {}  failed {}",
            s.delivered(),
            s.no_credential,
            s.failed_total()
        ));
        if s.dead_lettered > 0 {
            line.push_str(&format!("  dead {}", s.dead_lettered));
        }
        if s.duplicate > 0 {
            line.push_str(&format!("  dup {}", s.duplicate));
        }
        if let Some(p) = s.pending() {
            line.push_str(&format!("  pending {p}"));
        }
        match self.rate {
            Some(r) => line.push_str(&format!("  {}/s", format_rate(r))),
            None => line.push_str("  -/s"),
        }
        match self.eta_secs(s) {
            Some(e) => line.push_str(&format!("  ETA {}", format_duration(e))),
            None => line.push_str("  ETA ?"),
        }
        if s.record_state.as_deref() == Some(record::DISPATCHING) {
            line.push_str("  (dispatching)");
        }
        line
    }
}

async fn watch_loop(
    reader: &mut Reader,
    id: &str,
    json: bool,
    first: Snapshot,
) -> anyhow::Result<()> {
    let ctrl_c = stop_requested();
    tokio::pin!(ctrl_c);
    // Poll it once now, so the handlers are in place before the first line is drawn (a
    // signal arriving before the first poll would end the process the default way).
    tokio::select! {
        biased;
        _ = &mut ctrl_c => return Ok(()),
        _ = std::future::ready(()) => {}
    }
    let mut live = Live::default();
    let mut snap = first;
    let mut bar_len = 0usize;
    let mut failing_since: Option<Instant> = None;
    let mut note: Option<String> = None;
    loop {
        live.observe(Instant::now(), snap.final_outcomes());
        if json {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", snap.to_json(Some(&live)))?;
            out.flush()?;
            if snap.complete() {
                return Ok(());
            }
        } else {
            if snap.complete() {
                end_bar(bar_len);
                let mut out = std::io::stdout().lock();
                write!(out, "{}", snap.table())?;
                out.flush()?;
                return Ok(());
            }
            let mut line = live.bar(&snap);
            if let Some(n) = &note {
                line.push_str("  [");
                line.push_str(n);
                line.push(']');
            }
            bar_len = draw_bar(&line, bar_len);
        }
        let next = async {
            tokio::time::sleep(WATCH_EVERY).await;
            reader.read(id).await
        };
        let read = tokio::select! {
            _ = &mut ctrl_c => {
                if !json {
                    end_bar(bar_len);
                }
                return Ok(());
            }
            r = next => r,
        };
        match read {
            Ok(Some(s)) => {
                snap = s;
                failing_since = None;
                note = None;
            }
            Ok(None) => {
                if !json {
                    end_bar(bar_len);
                }
                anyhow::bail!("campaign {id} is gone from namespace {}", reader.ns);
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= WATCH_OUTAGE_LIMIT {
                    if !json {
                        end_bar(bar_len);
                    }
                    return Err(e);
                }
                let msg = crate::ops::scrubber().scrub(&format!("{e:#}").replace('\n', " "));
                if json {
                    eprintln!("wxpush: {msg} (retrying)");
                }
                note = Some(format!("{msg}; retrying"));
                // Show the last figures again, with the note, until Redis answers.
                snap.at_ms = now_ms();
            }
        }
    }
}

/// Ctrl-C (or SIGTERM, as the roles treat it). If no handler can be installed, this never
/// resolves: watching goes on, and the process can still be killed.
async fn stop_requested() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = ctrl_c => {}
            }
            return;
        }
    }
    ctrl_c.await
}

/// Redraws the progress line in place; returns its length, to blank a longer predecessor.
fn draw_bar(line: &str, previous: usize) -> usize {
    let len = line.chars().count();
    let pad = previous.saturating_sub(len);
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{line}{}", " ".repeat(pad));
    let _ = err.flush();
    len
}

/// Ends the progress line (if one was drawn), so what follows starts on a line of its own.
fn end_bar(bar_len: usize) {
    if bar_len > 0 {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err);
        let _ = err.flush();
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Unix ms as `2026-11-28 09:14:03 UTC` (no date crate: the civil calendar by hand).
pub(crate) fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// `ms` (Unix) as ISO-8601 in UTC, to the millisecond: `2026-12-06T08:00:05.250Z`.
pub(crate) fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era.saturating_mul(400) + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds as `850ms`, `12.3s`, `4m 05s`, `2h 03m 04s`, `3d 04h 05m`.
fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_owned();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

fn format_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{}", r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_861_443_999), "2026-11-28 10:24:03 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        // Absurd values do not panic.
        let _ = format_utc(i64::MAX);
        let _ = format_utc(i64::MIN);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(0.25), "250ms");
        assert_eq!(format_duration(12.34), "12.3s");
        assert_eq!(format_duration(245.0), "4m 05s");
        assert_eq!(format_duration(7384.0), "2h 03m 04s");
        assert_eq!(format_duration(f64::INFINITY), "?");
    }

    #[test]
    fn pending_and_complete_follow_the_format() {
        let camp = map(&[
            (field::STATE, record::DISPATCHED),
            (field::TARGETED, "10"),
            (field::STARTED_AT_MS, "1000"),
        ]);
        let cs = map(&[
            ("sent", "6"),
            ("sent_unconfirmed", "1"),
            ("no_credential", "1"),
            ("failed:40037", "1"),
            ("retried", "4"),
        ]);
        let s = Snapshot::from_hashes("c", &camp, &cs, 11_000);
        assert_eq!(s.final_outcomes(), 9);
        assert_eq!(s.pending(), Some(1));
        assert!(!s.complete());
        assert_eq!(s.state(), "dispatched");
        assert_eq!(s.sent_per_sec(), Some(0.7));
        // Duplicate jobs are not recipient outcomes: 8 sent of 10 targeted is not complete.
        let cs = map(&[("sent", "8"), ("duplicate", "2"), ("last_at_ms", "6000")]);
        let s = Snapshot::from_hashes("c", &camp, &cs, 11_000);
        assert!(!s.complete());
        assert_eq!(s.pending(), Some(2));
        let cs = map(&[("sent", "10"), ("duplicate", "2"), ("last_at_ms", "6000")]);
        let s = Snapshot::from_hashes("c", &camp, &cs, 11_000);
        assert!(s.complete());
        assert_eq!(s.state(), "complete");
        assert_eq!(s.recipients(), Some(10));
        assert_eq!(s.elapsed_ms(), Some(5000));
    }

    #[test]
    fn a_scheduled_campaign_shows_its_time_until_due_and_cancelled_is_final() {
        let at = 1_764_950_400_000i64;
        let camp = map(&[
            (field::STATE, record::SCHEDULED),
            (field::TARGETED, "0"),
            (field::SEND_AT_MS, "1764950405250"),
        ]);
        let s = Snapshot::from_hashes("c", &camp, &BTreeMap::new(), at);
        assert_eq!(s.state(), "scheduled");
        assert!(!s.complete());
        assert_eq!(s.pending(), Some(0));
        let j = s.to_json(None);
        assert_eq!(j["send_at_ms"], 1_764_950_405_250i64);
        assert_eq!(j["send_at"], "2025-12-05T16:00:05.250Z");
        assert_eq!(j["state"], "scheduled");
        assert!(j["started_at_ms"].is_null());
        assert_eq!(
            Live::default().bar(&s),
            "scheduled: sends at 2025-12-05T16:00:05.250Z (1764950405250), in 5.2s"
        );
        let table = s.table();
        assert!(
            table.contains("2025-12-05T16:00:05.250Z (1764950405250), in 5.2s\n"),
            "{table}"
        );
        // Cancelled before its time: cancelled, and complete (nothing will be sent).
        let mut cancelled = camp.clone();
        cancelled.insert(field::CANCELLED_AT_MS.into(), at.to_string());
        let s = Snapshot::from_hashes("c", &cancelled, &BTreeMap::new(), at + 10_000);
        assert_eq!(s.state(), "cancelled");
        assert!(s.complete());
        assert!(!s.table().contains(", due"));
        assert_eq!(s.waiting_for_its_time(), None);
        // Paused before its time: paused (the time still shown).
        let mut paused = camp.clone();
        paused.insert(field::PAUSED_AT_MS.into(), at.to_string());
        let s = Snapshot::from_hashes("c", &paused, &BTreeMap::new(), at + 10_000);
        assert_eq!(s.state(), "paused");
        assert!(s.table().contains(", due"), "{}", s.table());
        // Once dispatched, as any campaign; the time it was scheduled for is kept.
        let mut done = camp.clone();
        done.insert(field::STATE.into(), record::DISPATCHING.into());
        let s = Snapshot::from_hashes("c", &done, &BTreeMap::new(), at + 10_000);
        assert_eq!(s.state(), "dispatching");
        assert_eq!(s.to_json(None)["send_at_ms"], 1_764_950_405_250i64);
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn junk_is_a_warning_not_a_panic() {
        let camp = map(&[
            (field::STATE, record::DISPATCHING),
            (field::TARGETED, "ten"),
        ]);
        let cs = map(&[
            ("sent", "lots"),
            ("failed:40003", "-2"),
            ("last_at_ms", "x"),
        ]);
        let s = Snapshot::from_hashes("c", &camp, &cs, 0);
        assert_eq!(s.targeted, None);
        assert_eq!(s.pending(), None);
        assert_eq!(s.sent, 0);
        assert_eq!(s.failed_total(), 0);
        assert_eq!(s.warnings.len(), 4, "{:?}", s.warnings);
        assert!(s.table().contains("warning: cs field sent is not a count"));
    }

    #[test]
    fn counters_without_a_record_leave_targeted_unknown() {
        let s = Snapshot::from_hashes("c", &BTreeMap::new(), &map(&[("sent", "3")]), 0);
        assert_eq!(s.state(), "unknown");
        assert_eq!(s.targeted, None);
        assert!(!s.complete());
        assert!(s.table().contains("unknown (no dispatch record)"));
        assert!(Live::default().bar(&s).contains("done 3"));
    }

    #[test]
    fn the_moving_rate_uses_the_last_seconds() {
        let t0 = Instant::now();
        let mut live = Live::default();
        live.observe(t0, 0);
        assert_eq!(live.rate, None);
        for i in 1..=20u64 {
            // 100/s for 5 s, then 1000/s for 5 s.
            let done = if i <= 10 {
                i * 50
            } else {
                500 + (i - 10) * 500
            };
            live.observe(t0 + Duration::from_millis(i * 500), done);
        }
        let r = live.rate.unwrap_or(0.0);
        assert!((r - 1000.0).abs() < 1.0, "{r}");
        let camp = map(&[
            (field::STATE, record::DISPATCHED),
            (field::TARGETED, "10500"),
        ]);
        let s = Snapshot::from_hashes("c", &camp, &map(&[("sent", "5500")]), 0);
        assert_eq!(live.eta_secs(&s), Some(5.0));
        let bar = live.bar(&s);
        assert!(
            bar.starts_with("[##########..........]  52% 5500/10500"),
            "{bar}"
        );
        assert!(bar.contains("pending 5000  1000/s  ETA 5.0s"), "{bar}");
    }

    #[test]
    fn failed_codes_sort_numerically_and_have_meanings() {
        let cs = map(&[
            ("failed:48001", "1"),
            ("failed:-1", "2"),
            ("failed:40037", "3"),
        ]);
        let s = Snapshot::from_hashes("c", &BTreeMap::new(), &cs, 0);
        let codes: Vec<&str> = s.failed_by_code().iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, ["-1", "40037", "48001"]);
        assert!(s.table().contains("40037 (bad template)"));
    }
}
