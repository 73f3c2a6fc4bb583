//! What the dashboard shows, as JSON (the API's answers, which the pages are drawn from):
//! campaigns (the campaign index, each read as `wxpush campaign status` reads it, with a
//! moving rate and ETA kept per campaign between polls), one message or user, and the reach
//! forecast (kept for [`REACH_FRESH`]: on a large bank it takes seconds).
//!
//! Every read goes through the code the command line uses (`status::Reader`,
//! `message::to_json`, `reach::report_json`) or the bank's read-only methods; this module must
//! not write to Redis, and must not put a credential's value, a secret or a token in what it
//! returns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wxpush_bank::Bank;
use wxpush_domain::{AppId, Config, OpenId};

use super::ListQuery;
use crate::status::{Live, Reader, Snapshot};

/// Campaigns listed at most (a request may ask for fewer or up to this).
pub const MAX_LIST: usize = 100;
/// Campaigns listed unless the request says.
pub const DEFAULT_LIST: usize = 20;
/// How long a reach forecast is shown before it is counted again.
pub const REACH_FRESH: Duration = Duration::from_secs(30);
/// A complete campaign is read again at most this often (its counts no longer move, but for a
/// retry): the list's in-flight campaigns are read on every poll, the finished ones seldom.
pub const COMPLETE_FRESH: Duration = Duration::from_secs(30);
/// A campaign's moving rate is forgotten when nobody looked at it for this long.
const LIVE_IDLE: Duration = Duration::from_secs(600);
/// Counters that are not outcomes (a recipient counted once each): shown apart.
const BOOKKEEPING: [&str; 3] = ["duplicate", "retried", "requeued"];

pub struct Data {
    config: Config,
    bank: Bank,
    live: Mutex<HashMap<(String, String), (Instant, Live)>>,
    /// Complete campaigns as last read (kept [`COMPLETE_FRESH`]).
    complete: Mutex<HashMap<(String, String), (Instant, Value)>>,
    reach: Mutex<HashMap<String, (Instant, Value)>>,
}

type Found<T> = Result<T, String>;

impl Data {
    pub fn new(config: &Config, bank: Bank) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            bank,
            live: Mutex::new(HashMap::new()),
            complete: Mutex::new(HashMap::new()),
            reach: Mutex::new(HashMap::new()),
        })
    }

    fn reader(&self) -> Found<Reader> {
        Reader::with_bank(&self.config, self.bank.clone()).map_err(|e| format!("{e:#}"))
    }

    /// The apps a request means: the one it names (any valid appid) or every configured one.
    fn apps(&self, config: &Config, app: Option<&str>) -> Found<Vec<AppId>> {
        match app.map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) => Ok(vec![AppId::new(a).map_err(|e| format!("app: {e}"))?]),
            None => Ok(config.apps.iter().map(|a| a.id.clone()).collect()),
        }
    }

    /// The campaigns of the index, newest first, filtered by app and state.
    pub async fn campaigns(&self, config: &Config, q: &ListQuery) -> Found<Vec<Value>> {
        let limit = q.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
        let mut ids: Vec<(AppId, String, i64)> = Vec::new();
        for app in self.apps(config, q.app.as_deref())? {
            let listed = self
                .bank
                .campaign_list(&app, limit)
                .await
                .map_err(|e| format!("cannot read the campaign index: {e}"))?;
            ids.extend(listed.into_iter().map(|(id, at)| (app.clone(), id, at)));
        }
        ids.sort_by_key(|c| std::cmp::Reverse(c.2));
        let state = q.state.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let mut out = Vec::new();
        for (app, id, _) in ids {
            let key = (app.to_string(), id.clone());
            let cached = {
                let mut done = self.complete.lock().unwrap_or_else(|p| p.into_inner());
                done.retain(|_, (at, _)| at.elapsed() < COMPLETE_FRESH);
                done.get(&key).map(|(_, v)| v.clone())
            };
            let read = match cached {
                Some(v) => Some(v),
                None => self.read(&app, &id, false).await?,
            };
            let Some(c) = read else {
                continue; // its record expired since it was indexed
            };
            if state.is_some_and(|s| c["state"].as_str() != Some(s)) {
                continue;
            }
            out.push(c);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// One campaign: `wxpush campaign status --json`'s object, with the moving rate and ETA,
    /// every counter by name, and the sends per second over its life.
    pub async fn campaign(&self, app: &AppId, id: &str) -> Found<Option<Value>> {
        self.read(app, id, true).await
    }

    /// One campaign, with its sends by time (`rates`: its own 1,024 reads, for its page) or
    /// without (the list).
    async fn read(&self, app: &AppId, id: &str, rates: bool) -> Found<Option<Value>> {
        if wxpush_domain::job::check_campaign_id(id).is_err() {
            return Ok(None);
        }
        let mut reader = self.reader()?;
        let snap = reader
            .read_of(app, id)
            .await
            .map_err(|e| crate::ops::scrubber().scrub(&format!("{e:#}")))?;
        let Some(mut snap) = snap else {
            return Ok(None);
        };
        if rates {
            snap.sends_by_time = self
                .bank
                .campaign_rates(app, id)
                .await
                .map_err(|e| crate::ops::scrubber().scrub(&format!("{e:#}")))?;
        }
        let mut v = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            live.retain(|_, (seen, _)| now.duration_since(*seen) < LIVE_IDLE);
            let entry = live
                .entry((app.to_string(), id.to_owned()))
                .or_insert_with(|| (now, Live::default()));
            entry.0 = now;
            entry.1.observe(now, snap.final_outcomes());
            snap.to_json(Some(&entry.1))
        };
        extend(&mut v, app, &snap);
        if snap.complete() {
            self.complete
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry((app.to_string(), id.to_owned()))
                .or_insert_with(|| (Instant::now(), v.clone()));
        }
        Ok(Some(v))
    }

    /// A text looked up on the Messages page: as a messageId and as an openId.
    pub async fn lookup(&self, config: &Config, text: &str, app: Option<&str>) -> Found<Value> {
        let messages = if wxpush_domain::job::check_campaign_id(text).is_ok() {
            self.message(config, text, app).await?
        } else {
            Vec::new()
        };
        let users = if OpenId::new(text).is_ok() {
            self.user(config, text, app).await?
        } else {
            Vec::new()
        };
        Ok(json!({"query": text, "messages": messages, "users": users}))
    }

    /// Single message `id` in each app that has one (`wxpush message status --json`).
    pub async fn message(&self, config: &Config, id: &str, app: Option<&str>) -> Found<Vec<Value>> {
        wxpush_domain::job::check_campaign_id(id)
            .map_err(|e| format!("message id: {e}").replace("campaignId", "messageId"))?;
        let mut out = Vec::new();
        for app in self.apps(config, app)? {
            let status = self
                .bank
                .message_status(&app, id)
                .await
                .map_err(|e| format!("cannot read message {id}'s status: {e}"))?;
            if status != wxpush_bank::MessageStatus::default() {
                out.push(crate::message::to_json(id, &app, &status));
            }
        }
        Ok(out)
    }

    /// What `open_id` holds in each app where it holds anything or was messaged.
    pub async fn user(
        &self,
        config: &Config,
        open_id: &str,
        app: Option<&str>,
    ) -> Found<Vec<Value>> {
        let who = OpenId::new(open_id).map_err(|e| format!("openId: {e}"))?;
        let mut out = Vec::new();
        for app in self.apps(config, app)? {
            let view = self
                .bank
                .user_view(&app, &who)
                .await
                .map_err(|e| format!("cannot read user {open_id}: {e}"))?;
            if view == wxpush_bank::UserView::default() {
                continue;
            }
            let credentials: Vec<Value> = view
                .credentials
                .iter()
                .map(|(kind, exp)| json!({"kind": kind, "expires_at": exp}))
                .collect();
            let marks: Vec<Value> = view
                .marks
                .iter()
                .map(|(campaign, state)| {
                    let (single, id) = match campaign.strip_prefix(wxpush_domain::SINGLE_MARK) {
                        Some(m) => (true, m),
                        None => (false, campaign.as_str()),
                    };
                    json!({
                        "campaign_id": (!single).then_some(id),
                        "message_id": single.then_some(id),
                        "state": mark_state(state),
                    })
                })
                .collect();
            out.push(json!({
                "openId": open_id,
                "appId": app.as_str(),
                "credentials": credentials,
                "consents": view.consents,
                "marks": marks,
            }));
        }
        Ok(out)
    }

    /// The reach forecast of each app asked for (cached for [`REACH_FRESH`]).
    pub async fn reach(&self, config: &Config, app: Option<&str>) -> Found<Vec<Value>> {
        let mut out = Vec::new();
        for app in self.apps(config, app)? {
            let cached = {
                let cache = self.reach.lock().unwrap_or_else(|p| p.into_inner());
                cache
                    .get(app.as_str())
                    .filter(|(at, _)| at.elapsed() < REACH_FRESH)
                    .map(|(_, v)| v.clone())
            };
            let report = match cached {
                Some(v) => v,
                None => {
                    let v = crate::reach::report_json(&self.bank, config, &app)
                        .await
                        .map_err(|e| format!("cannot count the reach of app {app}: {e:#}"))?;
                    self.reach
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(app.to_string(), (Instant::now(), v.clone()));
                    v
                }
            };
            out.push(report);
        }
        Ok(out)
    }
}

/// A mark's state as words: `sent` (day …), `in progress`, `queued again`.
fn mark_state(state: &str) -> String {
    match state {
        "L" => "in progress (a credential held)".into(),
        "Q" => "queued again (campaign retry)".into(),
        s => match s.strip_prefix('=') {
            Some(rest) => rest
                .split_once('@')
                .map_or_else(|| rest.to_owned(), |(o, _)| o.to_owned()),
            None => s.to_owned(),
        },
    }
}

/// Adds what the dashboard shows beyond the status: the app it was read for, the counters by
/// name (outcomes, then bookkeeping), the sends per second by 10 s, the record's times.
fn extend(v: &mut Value, app: &AppId, snap: &Snapshot) {
    let outcomes: Vec<Value> = snap
        .counters
        .iter()
        .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()))
        .map(|(k, n)| json!({"outcome": k, "count": n}))
        .collect();
    let bookkeeping: serde_json::Map<String, Value> = snap
        .counters
        .iter()
        .filter(|(k, _)| BOOKKEEPING.contains(&k.as_str()))
        .map(|(k, n)| (k.clone(), json!(n)))
        .collect();
    let width = wxpush_bank::RATE_BUCKET_SECS;
    let rate: Vec<Value> = snap
        .sends_by_time
        .iter()
        .map(|(t, n)| json!({"at": t, "secs": width, "sends": n, "per_sec": *n as f64 / width as f64}))
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("app".into(), json!(app.as_str()));
        o.insert("outcomes".into(), json!(outcomes));
        o.insert("bookkeeping".into(), json!(bookkeeping));
        o.insert("sends_per_sec".into(), json!(rate));
        o.insert("times".into(), json!(snap.record_times));
        o.insert("done".into(), json!(snap.final_outcomes()));
    }
}
