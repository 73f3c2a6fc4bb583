//! The fake's whole state and WeChat's rules applied to it: tokens, formIds and prepay_ids,
//! consents, templates, quotas, fault rolls, and the request log.
//!
//! This module owns every decision the fake makes, as plain synchronous methods called under
//! one short-held mutex. It must not do I/O or sleep (the HTTP layer applies latency after the
//! lock is released).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{FakeApp, FakeConfig, Faults, LostReplyMode};
use crate::ids;
use crate::limits;
use crate::record::{Endpoint, RequestRecord, Stats};

/// A control operation the fake refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeError {
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the fake needs at least one app")]
    NoApps,
    #[error("cannot listen: {0}")]
    Io(String),
}

/// How the HTTP layer should answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Body,
    /// Wait this long (ms) before answering.
    pub latency_ms: u64,
    /// After the wait, close the connection without answering (`lostReplyMode: "reset"`).
    pub reset: bool,
}

/// An answer's body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// WeChat's JSON.
    Json(Value),
    /// Not from WeChat: an injected 500's text, a gateway's HTML page.
    Text {
        content_type: &'static str,
        text: String,
    },
}

struct Answer {
    status: u16,
    /// `None` when the answer is not WeChat's (an injected HTTP 500, an outage).
    errcode: Option<i64>,
    errmsg: Cow<'static, str>,
    msgid: Option<i64>,
    /// A token answer `{"access_token", "expires_in"}` (no errcode on the wire).
    token: Option<Box<(String, u64)>>,
    /// Answered by the outage (`outageStatus`) with a gateway's page.
    outage: bool,
}

impl Answer {
    fn err(errcode: i64, errmsg: &'static str) -> Self {
        Self {
            status: 200,
            errcode: Some(errcode),
            errmsg: Cow::Borrowed(errmsg),
            msgid: None,
            token: None,
            outage: false,
        }
    }
    fn ok() -> Self {
        Self::err(0, "ok")
    }
    fn http500() -> Self {
        Self {
            status: 500,
            errcode: None,
            errmsg: Cow::Borrowed(""),
            msgid: None,
            token: None,
            outage: false,
        }
    }
    /// The outage's answer: `status` from a gateway in front of WeChat.
    fn outage(status: u16) -> Self {
        Self {
            status,
            outage: true,
            ..Self::http500()
        }
    }
    fn body(&self) -> Body {
        if let Some(t) = &self.token {
            return Body::Json(json!({ "access_token": t.0, "expires_in": t.1 }));
        }
        match self.errcode {
            None if self.outage => gateway_page(self.status),
            None => Body::Text {
                content_type: "text/plain",
                text: "Internal Server Error".to_owned(),
            },
            Some(code) => {
                let mut b = json!({ "errcode": code, "errmsg": self.errmsg });
                if let Some(id) = self.msgid {
                    b["msgid"] = json!(id);
                }
                Body::Json(b)
            }
        }
    }
}

/// The page a gateway (nginx, a load balancer) answers with `status` instead of WeChat's JSON.
fn gateway_page(status: u16) -> Body {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Body::Text {
        content_type: "text/html",
        text: format!(
            "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>\
             {status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n\
             </html>\r\n"
        ),
    }
}

struct App {
    secret: String,
    templates: HashSet<String>,
    pages: Option<HashSet<String>>,
    users: HashSet<String>,
    current_token: Option<String>,
    stable_token: Option<String>,
    token_fetches: u64,
    stable_fetches: u64,
    /// `force_refresh: true` calls answered with a token.
    stable_forced: u64,
    /// (China-time day, `force_refresh: true` calls that day).
    forced_today: (u64, u32),
    /// When a `force_refresh: true` call last replaced the stable token.
    last_forced_ms: Option<u64>,
    second: (u64, u32),
    minute: (u64, u32),
}

impl App {
    fn new(a: &FakeApp) -> Self {
        Self {
            secret: a.secret.clone(),
            templates: a.templates.iter().cloned().collect(),
            pages: a.pages.as_ref().map(|p| p.iter().cloned().collect()),
            users: HashSet::new(),
            current_token: None,
            stable_token: None,
            token_fetches: 0,
            stable_fetches: 0,
            stable_forced: 0,
            forced_today: (0, 0),
            last_forced_ms: None,
            second: (0, 0),
            minute: (0, 0),
        }
    }
}

struct TokenEntry {
    app: String,
    expires_at_ms: u64,
    /// Refused by the send APIs (40001) before its time; see [`State::revoke_tokens`].
    revoked: bool,
    /// Its end was brought forward because a newer token replaced it: once past, WeChat
    /// answers 40001 ("not latest"), not 42001 (expired).
    superseded: bool,
}

impl TokenEntry {
    /// A newer token replaced this one: it works `grace` more ms, then is "not latest".
    fn supersede(&mut self, now: u64, grace: u64) {
        if now + grace < self.expires_at_ms {
            self.expires_at_ms = now + grace;
            self.superseded = true;
        }
    }
}

struct Cred {
    app: String,
    open_id: String,
    expires_at_ms: u64,
    uses: u32,
    max_uses: u32,
}

/// The body of a template send, as far as the fake reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct TemplateBody {
    touser: String,
    template_id: String,
    #[serde(default)]
    page: Option<String>,
    form_id: String,
    #[serde(default)]
    data: Option<Value>,
}

/// Which API was called, when, and whether it asked `force_refresh`, for its record.
struct Call {
    endpoint: Endpoint,
    /// When it arrived, and when it was judged (ms since the Unix epoch).
    received: u64,
    now: u64,
    forced: bool,
}

impl Call {
    fn new(endpoint: Endpoint, received: u64, now: u64) -> Self {
        Self {
            endpoint,
            received,
            now,
            forced: false,
        }
    }
}

/// What a request named, for its record.
#[derive(Default, Clone, Copy)]
struct Named<'a> {
    touser: Option<&'a str>,
    template_id: Option<&'a str>,
    form_id: Option<&'a str>,
    data: Option<&'a Value>,
}

/// The body of a subscribe send, as far as the fake reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct SubscribeBody {
    touser: String,
    template_id: String,
    #[serde(default)]
    page: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    miniprogram_state: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

/// The body of a stable_token request.
#[derive(Debug, Deserialize)]
pub(crate) struct StableTokenBody {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    force_refresh: bool,
}

pub(crate) struct State {
    initial: FakeConfig,
    faults: Faults,
    token_fail_until_ms: u64,
    rng: fastrand::Rng,
    apps: HashMap<String, App>,
    default_app: String,
    tokens: HashMap<String, TokenEntry>,
    creds: HashMap<String, Cred>,
    consents: HashMap<(String, String, String), u32>,
    records: Vec<RequestRecord>,
    dropped_records: u64,
    requests: u64,
    sends_accepted: u64,
    sends_by_open_id: HashMap<String, u64>,
    answers_by_errcode: BTreeMap<i64, u64>,
    http500s: u64,
    lost_replies: u64,
    outage_answers: u64,
    msgids_issued: u64,
}

const MSGID_BASE: i64 = 1_988_810_812_324_364_291;
/// WeChat's limits on `stable_token` with `force_refresh: true`: 20 calls a day, and a call
/// within 30 s of the last refresh does not refresh.
pub(crate) const FORCE_REFRESH_PER_DAY: u32 = 20;
pub(crate) const FORCE_REFRESH_SPACING_MS: u64 = 30_000;
/// WeChat's days are China's (UTC+8).
const CHINA_OFFSET_MS: u64 = 8 * 3_600_000;

impl State {
    pub fn new(config: FakeConfig) -> Result<Self, FakeError> {
        let first = config.apps.first().ok_or(FakeError::NoApps)?;
        config.faults.check().map_err(FakeError::BadRequest)?;
        let rng = match config.seed {
            Some(s) => fastrand::Rng::with_seed(s),
            None => fastrand::Rng::new(),
        };
        Ok(Self {
            default_app: first.app_id.clone(),
            apps: config
                .apps
                .iter()
                .map(|a| (a.app_id.clone(), App::new(a)))
                .collect(),
            faults: config.faults.clone(),
            token_fail_until_ms: 0,
            rng,
            tokens: HashMap::new(),
            creds: HashMap::new(),
            consents: HashMap::new(),
            records: Vec::new(),
            dropped_records: 0,
            requests: 0,
            sends_accepted: 0,
            sends_by_open_id: HashMap::new(),
            answers_by_errcode: BTreeMap::new(),
            http500s: 0,
            lost_replies: 0,
            outage_answers: 0,
            msgids_issued: 0,
            initial: config,
        })
    }

    // ----- the WeChat API -------------------------------------------------------------------

    /// `GET /cgi-bin/token`, arrived at `received`, judged at `now`.
    pub fn token(
        &mut self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
        received: u64,
        now: u64,
    ) -> Reply {
        let call = Call::new(Endpoint::Token, received, now);
        let answer = self.check_token_request(grant_type, appid, secret, now);
        let answer = match answer {
            Err(a) => a,
            Ok(app_id) => {
                let lifetime = self.initial.token_lifetime_ms;
                let grace = self.initial.token_grace_ms;
                let token = self.new_token(&app_id, now + lifetime);
                let app = self.apps.get_mut(&app_id).expect("checked app");
                if let Some(prev) = app.current_token.replace(token.clone()) {
                    if let Some(e) = self.tokens.get_mut(&prev) {
                        e.supersede(now, grace);
                    }
                }
                app.token_fetches += 1;
                token_answer(token, lifetime)
            }
        };
        self.finish(call, appid, Named::default(), answer)
    }

    /// `POST /cgi-bin/stable_token`, arrived at `received`, judged at `now`.
    pub fn stable_token(
        &mut self,
        body: Result<StableTokenBody, String>,
        received: u64,
        now: u64,
    ) -> Reply {
        let mut call = Call::new(Endpoint::StableToken, received, now);
        let body = match body {
            Ok(b) => b,
            Err(detail) => {
                let a = with_detail(Answer::err(47001, "data format error"), detail);
                return self.finish(call, None, Named::default(), a);
            }
        };
        let checked = self.check_token_request(
            Some(&body.grant_type),
            Some(&body.appid),
            Some(&body.secret),
            now,
        );
        let answer = match checked {
            Err(a) => a,
            Ok(app_id) => match self.force_allowed(&app_id, body.force_refresh, now) {
                Err(refused) => refused,
                Ok(force) => self.stable_answer(&app_id, force, now),
            },
        };
        let appid = Some(body.appid.as_str()).filter(|a| !a.is_empty());
        call.forced = body.force_refresh;
        self.finish(call, appid, Named::default(), answer)
    }

    /// WeChat's limits on `force_refresh: true`: `Err(45009)` past 20 calls in the (China) day;
    /// `Ok(false)` (answer as without it, no refresh) within 30 s of the last forced refresh.
    fn force_allowed(&mut self, app_id: &str, asked: bool, now: u64) -> Result<bool, Answer> {
        if !asked {
            return Ok(false);
        }
        let app = self.apps.get_mut(app_id).expect("checked app");
        let day = (now + CHINA_OFFSET_MS) / 86_400_000;
        if app.forced_today.0 != day {
            app.forced_today = (day, 0);
        }
        if app.forced_today.1 >= FORCE_REFRESH_PER_DAY {
            return Err(Answer::err(45009, "reach max api daily quota limit"));
        }
        app.forced_today.1 += 1;
        app.stable_forced += 1;
        let too_soon = app
            .last_forced_ms
            .is_some_and(|t| now < t + FORCE_REFRESH_SPACING_MS);
        if !too_soon {
            app.last_forced_ms = Some(now);
        }
        Ok(!too_soon)
    }

    /// The stable token: the current one while it has more than `min(grace, lifetime / 2)`
    /// left and `force` is false, else a new one (a forced one ends the old one's life after
    /// the grace period).
    fn stable_answer(&mut self, app_id: &str, force: bool, now: u64) -> Answer {
        let lifetime = self.initial.token_lifetime_ms;
        let grace = self.initial.token_grace_ms;
        let early = grace.min(lifetime / 2);
        let current = self.apps[app_id]
            .stable_token
            .as_ref()
            .and_then(|t| self.tokens.get(t).map(|e| (t.clone(), e.expires_at_ms)));
        let reuse = match &current {
            Some((t, exp)) if !force && *exp > now + early => Some((t.clone(), *exp - now)),
            _ => None,
        };
        let (token, left) = match reuse {
            Some(r) => r,
            None => {
                if let (true, Some((old, _))) = (force, &current) {
                    if let Some(e) = self.tokens.get_mut(old) {
                        e.supersede(now, grace);
                    }
                }
                let t = self.new_token(app_id, now + lifetime);
                self.apps.get_mut(app_id).expect("checked app").stable_token = Some(t.clone());
                (t, lifetime)
            }
        };
        self.apps
            .get_mut(app_id)
            .expect("checked app")
            .stable_fetches += 1;
        token_answer(token, left)
    }

    /// `POST /cgi-bin/message/wxopen/template/send`, arrived at `received`, judged at `now`.
    pub fn template_send(
        &mut self,
        token: Option<&str>,
        body: Result<TemplateBody, String>,
        received: u64,
        now: u64,
    ) -> Reply {
        let call = Call::new(Endpoint::TemplateSend, received, now);
        let (app_id, answer) = match self.send_prelude(token, now) {
            Err((app, a)) => (app, a),
            Ok(app_id) => {
                let a = match &body {
                    Err(detail) => {
                        with_detail(Answer::err(47001, "data format error"), detail.clone())
                    }
                    Ok(b) => self.template_rules(&app_id, b, now),
                };
                (Some(app_id), a)
            }
        };
        let b = body.as_ref().ok();
        let named = Named {
            touser: b.map(|b| b.touser.as_str()),
            template_id: b.map(|b| b.template_id.as_str()),
            form_id: b.map(|b| b.form_id.as_str()),
            data: b.and_then(|b| b.data.as_ref()),
        };
        self.finish(call, app_id.as_deref(), named, answer)
    }

    /// `POST /cgi-bin/message/subscribe/send`, arrived at `received`, judged at `now`.
    pub fn subscribe_send(
        &mut self,
        token: Option<&str>,
        body: Result<SubscribeBody, String>,
        received: u64,
        now: u64,
    ) -> Reply {
        let call = Call::new(Endpoint::SubscribeSend, received, now);
        let (app_id, answer) = match self.send_prelude(token, now) {
            Err((app, a)) => (app, a),
            Ok(app_id) => {
                let a = match &body {
                    Err(detail) => {
                        with_detail(Answer::err(47001, "data format error"), detail.clone())
                    }
                    Ok(b) => self.subscribe_rules(&app_id, b),
                };
                (Some(app_id), a)
            }
        };
        let b = body.as_ref().ok();
        let named = Named {
            touser: b.map(|b| b.touser.as_str()),
            template_id: b.map(|b| b.template_id.as_str()),
            form_id: None,
            data: b.and_then(|b| b.data.as_ref()),
        };
        self.finish(call, app_id.as_deref(), named, answer)
    }

    fn check_token_request(
        &mut self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
        now: u64,
    ) -> Result<String, Answer> {
        if let Some(status) = self
            .faults
            .outage_at(now)
            .filter(|_| self.faults.outage_tokens)
        {
            return Err(Answer::outage(status));
        }
        if now < self.token_fail_until_ms {
            return Err(Answer::err(-1, "system error"));
        }
        if grant_type != Some("client_credential") {
            return Err(Answer::err(40002, "invalid grant_type"));
        }
        let appid = appid.unwrap_or_default();
        let Some(app) = self.apps.get(appid) else {
            return Err(Answer::err(40013, "invalid appid"));
        };
        // 40125 (not 40001): the code WeChat documents for a wrong secret on these endpoints.
        if secret != Some(app.secret.as_str()) {
            return Err(Answer::err(40125, "invalid appsecret"));
        }
        Ok(appid.to_owned())
    }

    /// Every access token issued and still remembered (for tests that look for leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.tokens.keys().cloned().collect()
    }

    fn new_token(&mut self, app_id: &str, expires_at_ms: u64) -> String {
        if self.tokens.len() > 100_000 {
            let horizon = expires_at_ms.saturating_sub(self.initial.token_lifetime_ms * 2);
            self.tokens.retain(|_, e| e.expires_at_ms > horizon);
        }
        let token = ids::access_token(&mut self.rng);
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                app: app_id.to_owned(),
                expires_at_ms,
                revoked: false,
                superseded: false,
            },
        );
        token
    }

    /// Faults, the access token and the quotas; `Ok(app)` when the send may be judged.
    fn send_prelude(
        &mut self,
        token: Option<&str>,
        now: u64,
    ) -> Result<String, (Option<String>, Answer)> {
        if let Some(status) = self.faults.outage_at(now) {
            return Err((None, Answer::outage(status)));
        }
        if self.faults.http500_probability > 0.0 && self.rng.f64() < self.faults.http500_probability
        {
            return Err((None, Answer::http500()));
        }
        if self.faults.busy_probability > 0.0 && self.rng.f64() < self.faults.busy_probability {
            return Err((None, Answer::err(-1, "system error")));
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err((None, Answer::err(41001, "access_token missing")));
        };
        let Some(entry) = self.tokens.get(token) else {
            return Err((
                None,
                Answer::err(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                ),
            ));
        };
        let app_id = entry.app.clone();
        if entry.revoked || (entry.superseded && now >= entry.expires_at_ms) {
            return Err((
                Some(app_id),
                Answer::err(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                ),
            ));
        }
        if now >= entry.expires_at_ms {
            return Err((Some(app_id), Answer::err(42001, "access_token expired")));
        }
        let (sec_quota, min_quota) = (self.faults.send_quota_per_sec, self.faults.minute_quota);
        let app = self.apps.get_mut(&app_id).expect("tokens belong to apps");
        if let Some(q) = sec_quota {
            if !take(&mut app.second, now / 1000, q) {
                return Err((
                    Some(app_id),
                    Answer::err(45009, "reach max api daily quota limit"),
                ));
            }
        }
        if let Some(q) = min_quota {
            if !take(&mut app.minute, now / 60_000, q) {
                return Err((
                    Some(app_id),
                    Answer::err(45011, "api minute-quota reach limit"),
                ));
            }
        }
        Ok(app_id)
    }

    /// User, template and page checks shared by both send APIs.
    fn addressee_rules(
        &self,
        app_id: &str,
        touser: &str,
        template_id: &str,
        page: Option<&str>,
    ) -> Option<Answer> {
        let app = &self.apps[app_id];
        if !app.users.contains(touser) {
            return Some(Answer::err(40003, "invalid openid"));
        }
        if !app.templates.contains(template_id) {
            return Some(Answer::err(40037, "invalid template_id"));
        }
        if let (Some(pages), Some(page)) = (&app.pages, page) {
            let path = page.split('?').next().unwrap_or_default();
            if !page.is_empty() && !pages.contains(path) {
                return Some(Answer::err(41030, "invalid page"));
            }
        }
        None
    }

    fn template_rules(&mut self, app_id: &str, b: &TemplateBody, now: u64) -> Answer {
        if let Some(a) = self.addressee_rules(app_id, &b.touser, &b.template_id, b.page.as_deref())
        {
            return a;
        }
        if b.data.as_ref().is_some_and(|d| !d.is_object()) {
            return Answer::err(47001, "data format error");
        }
        let Some(cred) = self.creds.get_mut(&b.form_id) else {
            return Answer::err(41028, "invalid form id");
        };
        if cred.app != app_id || cred.open_id != b.touser {
            return Answer::err(41028, "invalid form id");
        }
        let expired = now >= cred.expires_at_ms;
        if expired && self.faults.check_expiry_first {
            return Answer::err(41028, "invalid form id");
        }
        if cred.uses >= cred.max_uses {
            return Answer::err(41029, "form id used count reach limit");
        }
        if expired {
            return Answer::err(41028, "invalid form id");
        }
        cred.uses += 1;
        self.accept(&b.touser);
        Answer::ok()
    }

    fn subscribe_rules(&mut self, app_id: &str, b: &SubscribeBody) -> Answer {
        if let Some(a) = self.addressee_rules(app_id, &b.touser, &b.template_id, b.page.as_deref())
        {
            return a;
        }
        if b.miniprogram_state
            .as_deref()
            .is_some_and(|s| !["developer", "trial", "formal"].contains(&s))
        {
            return with_detail(
                Answer::err(47003, "argument invalid!"),
                "argument invalid! miniprogram_state invalid".into(),
            );
        }
        if b.lang
            .as_deref()
            .is_some_and(|l| !["zh_CN", "en_US", "zh_HK", "zh_TW"].contains(&l))
        {
            return with_detail(
                Answer::err(47003, "argument invalid!"),
                "argument invalid! lang invalid".into(),
            );
        }
        let data = b.data.clone().unwrap_or_else(|| json!({}));
        if let Err(msg) = limits::validate_data(&data) {
            return with_detail(Answer::err(47003, "argument invalid!"), msg);
        }
        if self.faults.refuse_subscribe_data {
            return with_detail(
                Answer::err(47003, "argument invalid!"),
                "argument invalid! data.thing1.value refused".into(),
            );
        }
        let key = (app_id.to_owned(), b.touser.clone(), b.template_id.clone());
        match self.consents.get_mut(&key) {
            Some(n) if *n > 0 => *n -= 1,
            _ => return Answer::err(43101, "user refuse to accept the msg"),
        }
        self.accept(&b.touser);
        let msgid = MSGID_BASE + self.msgids_issued as i64;
        self.msgids_issued += 1;
        Answer {
            msgid: Some(msgid),
            ..Answer::ok()
        }
    }

    fn accept(&mut self, open_id: &str) {
        self.sends_accepted += 1;
        match self.sends_by_open_id.get_mut(open_id) {
            Some(n) => *n += 1,
            None => {
                self.sends_by_open_id.insert(open_id.to_owned(), 1);
            }
        }
    }

    /// Counts and records the request, and decides how the caller gets `answer`: a delivered
    /// send may lose its reply (`lostReplyProbability`); every answer waits the injected
    /// latency.
    fn finish(
        &mut self,
        call: Call,
        app_id: Option<&str>,
        named: Named<'_>,
        answer: Answer,
    ) -> Reply {
        self.requests += 1;
        let is_send = matches!(
            call.endpoint,
            Endpoint::TemplateSend | Endpoint::SubscribeSend
        );
        let delivered = is_send && answer.errcode == Some(0);
        let p = self.faults.lost_reply_probability;
        let lost =
            (delivered && p > 0.0 && self.rng.f64() < p).then_some(self.faults.lost_reply_mode);
        let jitter = self.faults.latency_jitter_ms;
        let mut latency_ms = self.faults.latency_ms;
        if jitter > 0 {
            latency_ms += self.rng.u64(0..=jitter);
        }
        let mut reply = Reply {
            status: answer.status,
            body: answer.body(),
            latency_ms,
            reset: false,
        };
        let mut errcode = answer.errcode;
        let mut http_status = Some(answer.status);
        if let Some(mode) = lost {
            self.lost_replies += 1;
            errcode = None;
            let status = self.faults.lost_reply_status;
            reply.status = status;
            reply.body = gateway_page(status);
            http_status = Some(status);
            match mode {
                LostReplyMode::Status => {}
                LostReplyMode::Reset => {
                    reply.reset = true;
                    http_status = None;
                }
                LostReplyMode::Hang => reply.latency_ms = self.faults.lost_reply_hang_ms,
            }
        } else if answer.outage {
            self.outage_answers += 1;
        } else if let Some(c) = answer.errcode {
            *self.answers_by_errcode.entry(c).or_insert(0) += 1;
        } else {
            self.http500s += 1;
        }
        if self.records.len() < self.initial.max_recorded_requests {
            self.records.push(RequestRecord {
                at_ms: call.now,
                received_at_ms: call.received,
                endpoint: call.endpoint,
                app_id: app_id.map(str::to_owned),
                touser: named.touser.map(str::to_owned),
                template_id: named.template_id.map(str::to_owned),
                form_id: named.form_id.map(str::to_owned),
                data: named.data.cloned(),
                delivered,
                msgid: answer.msgid,
                errcode,
                http_status,
                lost_reply: lost,
                outage: answer.outage,
                latency_ms: reply.latency_ms,
                forced: call.forced,
            });
        } else {
            self.dropped_records += 1;
        }
        reply
    }

    // ----- the control API ------------------------------------------------------------------

    fn app_id(&self, app_id: Option<&str>) -> Result<String, FakeError> {
        let id = app_id.unwrap_or(&self.default_app);
        if self.apps.contains_key(id) {
            Ok(id.to_owned())
        } else {
            Err(FakeError::UnknownApp(id.to_owned()))
        }
    }

    /// The app named (or the default one), for changing it.
    fn app_mut(&mut self, app_id: Option<&str>) -> Result<&mut App, FakeError> {
        let id = app_id.unwrap_or(&self.default_app).to_owned();
        self.apps.get_mut(&id).ok_or(FakeError::UnknownApp(id))
    }

    pub fn register_user(&mut self, app_id: Option<&str>, open_id: &str) -> Result<(), FakeError> {
        if open_id.is_empty() {
            return Err(FakeError::BadRequest("openId is empty".into()));
        }
        self.app_mut(app_id)?.users.insert(open_id.to_owned());
        Ok(())
    }

    pub fn add_template(
        &mut self,
        app_id: Option<&str>,
        template_id: &str,
    ) -> Result<(), FakeError> {
        if template_id.is_empty() {
            return Err(FakeError::BadRequest("templateId is empty".into()));
        }
        self.app_mut(app_id)?
            .templates
            .insert(template_id.to_owned());
        Ok(())
    }

    /// Issues `count` credentials of `max_uses` uses each to `open_id`, expiring at `expires_at`.
    pub fn issue(
        &mut self,
        app_id: Option<&str>,
        open_id: &str,
        count: usize,
        ttl_ms: Option<u64>,
        max_uses: u32,
        now: u64,
    ) -> Result<(Vec<String>, u64), FakeError> {
        if count > 1_000_000 {
            return Err(FakeError::BadRequest("count over 1000000".into()));
        }
        self.register_user(app_id, open_id)?;
        let app = self.app_id(app_id)?;
        let expires_at_ms = now + ttl_ms.unwrap_or(self.initial.credential_ttl_ms);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let id = if max_uses == 1 {
                ids::form_id(&mut self.rng)
            } else {
                ids::prepay_id(&mut self.rng, now)
            };
            if self.creds.contains_key(&id) {
                continue;
            }
            self.creds.insert(
                id.clone(),
                Cred {
                    app: app.clone(),
                    open_id: open_id.to_owned(),
                    expires_at_ms,
                    uses: 0,
                    max_uses,
                },
            );
            out.push(id);
        }
        Ok((out, expires_at_ms))
    }

    pub fn grant_consents(
        &mut self,
        app_id: Option<&str>,
        open_id: &str,
        template_id: &str,
        count: u32,
    ) -> Result<u32, FakeError> {
        self.register_user(app_id, open_id)?;
        let app = self.app_id(app_id)?;
        let n = self
            .consents
            .entry((app, open_id.to_owned(), template_id.to_owned()))
            .or_insert(0);
        *n = n.saturating_add(count);
        Ok(*n)
    }

    pub fn consents_left(
        &self,
        app_id: Option<&str>,
        open_id: &str,
        template_id: &str,
    ) -> Result<u32, FakeError> {
        let app = self.app_id(app_id)?;
        Ok(self
            .consents
            .get(&(app, open_id.to_owned(), template_id.to_owned()))
            .copied()
            .unwrap_or(0))
    }

    pub fn form_id_uses(&self, form_id: &str) -> Option<u32> {
        self.creds.get(form_id).map(|c| c.uses)
    }

    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    pub fn set_faults(&mut self, faults: Faults) -> Result<(), FakeError> {
        faults.check().map_err(FakeError::BadRequest)?;
        self.faults = faults;
        Ok(())
    }

    /// How long token calls wait before they are judged (`tokenLatencyMs`).
    pub fn token_latency_ms(&self) -> u64 {
        self.faults.token_latency_ms
    }

    /// The app's secret from now on (token calls with another answer `40125`).
    pub fn set_secret(&mut self, app_id: Option<&str>, secret: &str) -> Result<(), FakeError> {
        self.app_mut(app_id)?.secret = secret.to_owned();
        Ok(())
    }

    pub fn token_outage(&mut self, for_ms: u64, now: u64) {
        self.token_fail_until_ms = now + for_ms;
    }

    /// Makes the send APIs refuse every unexpired token of the app (default app when `None`)
    /// with `40001`, while `stable_token` without `force_refresh` keeps answering its current
    /// one until it would have expired: a token WeChat stopped accepting early (a reset
    /// secret, a leak), which only `force_refresh: true` replaces.
    pub fn revoke_tokens(&mut self, app_id: Option<&str>, now: u64) -> Result<usize, FakeError> {
        let app = self.app_id(app_id)?;
        let mut n = 0;
        for e in self.tokens.values_mut().filter(|e| e.app == app) {
            if e.expires_at_ms > now && !e.revoked {
                e.revoked = true;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Makes every token of the app (default app when `None`) expired now.
    pub fn expire_tokens(&mut self, app_id: Option<&str>, now: u64) -> Result<usize, FakeError> {
        let app = self.app_id(app_id)?;
        let mut n = 0;
        for e in self.tokens.values_mut().filter(|e| e.app == app) {
            if e.expires_at_ms > now {
                e.expires_at_ms = now;
                e.superseded = false;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn requests(&self, since: usize) -> Vec<RequestRecord> {
        self.records
            .get(since..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn sends_to(&self, open_id: &str) -> u64 {
        self.sends_by_open_id.get(open_id).copied().unwrap_or(0)
    }

    pub fn users_sent_more_than(&self, limit: u64) -> BTreeMap<String, u64> {
        self.sends_by_open_id
            .iter()
            .filter(|(_, n)| **n > limit)
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let per_app = |f: fn(&App) -> u64| {
            self.apps
                .iter()
                .map(|(k, a)| (k.clone(), f(a)))
                .collect::<BTreeMap<_, _>>()
        };
        Stats {
            requests: self.requests,
            recorded: self.records.len(),
            dropped_records: self.dropped_records,
            sends_accepted: self.sends_accepted,
            sends_by_open_id: self
                .sends_by_open_id
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            answers_by_errcode: self.answers_by_errcode.clone(),
            http500s: self.http500s,
            lost_replies: self.lost_replies,
            outage_answers: self.outage_answers,
            token_fetches: per_app(|a| a.token_fetches),
            stable_token_fetches: per_app(|a| a.stable_fetches),
            stable_token_forced: per_app(|a| a.stable_forced),
            form_id_uses: self
                .creds
                .iter()
                .filter(|(_, c)| c.uses > 0)
                .map(|(k, c)| (k.clone(), c.uses))
                .collect(),
            msgids_issued: self.msgids_issued,
        }
    }

    /// Back to the starting configuration: no tokens, credentials, users, consents, records or
    /// counters; templates, pages and faults as configured at start.
    pub fn reset(&mut self) {
        let mut fresh = State::new(self.initial.clone()).expect("the initial config was valid");
        std::mem::swap(&mut fresh.rng, &mut self.rng);
        *self = fresh;
    }
}

fn take(window: &mut (u64, u32), slot: u64, quota: u32) -> bool {
    if window.0 != slot {
        *window = (slot, 0);
    }
    if window.1 >= quota {
        return false;
    }
    window.1 += 1;
    true
}

fn with_detail(mut a: Answer, detail: String) -> Answer {
    a.errmsg = Cow::Owned(detail);
    a
}

/// A token answer: `expires_in` is the whole seconds left, rounded down (a caller trusting it
/// errs early), at least 1.
fn token_answer(token: String, left_ms: u64) -> Answer {
    Answer {
        token: Some(Box::new((token, (left_ms / 1000).max(1)))),
        ..Answer::ok()
    }
}
