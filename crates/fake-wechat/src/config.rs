//! What a fake WeChat starts with: its apps, token lifetimes, credential lifetimes and fault
//! knobs. All of it (de)serialises as camelCase JSON, the shape the control API speaks.
//!
//! This module owns only values and their defaults. It must not hold runtime state.

use serde::{Deserialize, Serialize};

/// One mini program known to the fake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeApp {
    pub app_id: String,
    pub secret: String,
    /// Template ids accepted by both send APIs for this app (more can be added at runtime).
    #[serde(default)]
    pub templates: Vec<String>,
    /// When set, only these pages (the part before `?`) are accepted; others answer 41030.
    /// When `None`, every page is accepted.
    #[serde(default)]
    pub pages: Option<Vec<String>>,
}

impl FakeApp {
    pub fn new(app_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            secret: secret.into(),
            templates: Vec::new(),
            pages: None,
        }
    }

    pub fn with_templates<I, S>(mut self, templates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.templates.extend(templates.into_iter().map(Into::into));
        self
    }

    pub fn with_pages<I, S>(mut self, pages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pages = Some(pages.into_iter().map(Into::into).collect());
        self
    }
}

/// Failures and limits the fake injects, each modelling something a real gateway, network or
/// WeChat does to a sender. All are off by default; a missing field in JSON is its default.
/// Probabilities are in `[0, 1]`, HTTP statuses in `200..=599` ([`Faults::check`]).
///
/// The crate docs (`# Fault knobs`) say what each one models and what is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Chance that a send answers `{"errcode": -1, "errmsg": "system error"}` (nothing spent).
    pub busy_probability: f64,
    /// Chance that a send answers HTTP 500 (nothing spent).
    pub http500_probability: f64,
    /// Delay added before every WeChat API answer (not the control API), in ms. The request
    /// is processed (credentials spent) *before* the delay, as a timed-out real call may be.
    pub latency_ms: u64,
    /// A random extra delay in `[0, latencyJitterMs]` added to `latencyMs` for each answer
    /// (drawn from the seeded RNG), so that a soak sees varied reply times.
    pub latency_jitter_ms: u64,
    /// Sends per second and app accepted before answering 45009.
    pub send_quota_per_sec: Option<u32>,
    /// Sends per minute and app accepted before answering 45011.
    pub minute_quota: Option<u32>,
    /// Subscribe sends answer `47003` whatever their data, as WeChat does for content it
    /// refuses beyond the documented limits (its content checks).
    pub refuse_subscribe_data: bool,
    /// A formId or prepay_id that is both used up and expired answers `41028` (expired)
    /// rather than `41029` (used): WeChat's order of checks is not documented, so a sender must
    /// be right under either.
    pub check_expiry_first: bool,
    /// Chance that a send WeChat *accepted* (delivered: credential or consent spent, message
    /// counted to the user, msgid issued) loses its reply on the way back, as
    /// [`Self::lost_reply_mode`] says. Refused sends and token calls are answered as usual.
    pub lost_reply_probability: f64,
    /// How a lost reply reaches the caller.
    pub lost_reply_mode: LostReplyMode,
    /// The HTTP status a gateway answers in place of a lost reply (`status` and `hang`
    /// modes), with a gateway's HTML body, no WeChat JSON. Default 504.
    pub lost_reply_status: u16,
    /// In `hang` mode, how long after the send was judged the gateway answers
    /// `lostReplyStatus`: longer than any client's timeout. Default 60,000 (nginx's default
    /// `proxy_read_timeout`).
    pub lost_reply_hang_ms: u64,
    /// When set, every send answers this HTTP status with a gateway's HTML body, before
    /// anything is judged: nothing processed, nothing spent, no quota counted (an outage in
    /// front of WeChat, e.g. 503). Cleared by setting it back to `null`.
    pub outage_status: Option<u16>,
    /// The outage ([`Self::outage_status`]) also answers `/cgi-bin/token` and
    /// `/cgi-bin/stable_token`: no token issued.
    pub outage_tokens: bool,
    /// When set, the outage ends by itself at this time (ms since the Unix epoch, the clock
    /// of the records' `atMs`); `null`: until `outageStatus` is cleared.
    pub outage_until_ms: Option<u64>,
    /// Delay before `/cgi-bin/token` and `/cgi-bin/stable_token` are judged, in ms: the token
    /// is issued (or refused) only when the delay is over, then answered (after `latencyMs`).
    /// A caller that gives up waiting gets nothing; the token is issued all the same.
    pub token_latency_ms: u64,
}

/// What the caller of a send gets when its reply is lost ([`Faults::lost_reply_probability`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LostReplyMode {
    /// `"status"`: at once (after `latencyMs`), HTTP `lostReplyStatus` with a gateway's HTML
    /// body: a gateway 504 after WeChat delivered, the common case of a lost reply.
    #[default]
    Status,
    /// `"reset"`: the connection is closed (TCP reset) without an answer, after `latencyMs`.
    Reset,
    /// `"hang"`: no answer for `lostReplyHangMs`, then HTTP `lostReplyStatus` with a gateway's
    /// body; a client with a shorter timeout times out.
    Hang,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            busy_probability: 0.0,
            http500_probability: 0.0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            send_quota_per_sec: None,
            minute_quota: None,
            refuse_subscribe_data: false,
            check_expiry_first: false,
            lost_reply_probability: 0.0,
            lost_reply_mode: LostReplyMode::Status,
            lost_reply_status: 504,
            lost_reply_hang_ms: 60_000,
            outage_status: None,
            outage_tokens: false,
            outage_until_ms: None,
            token_latency_ms: 0,
        }
    }
}

impl Faults {
    /// Refuses a probability outside `[0, 1]` and an HTTP status outside `200..=599`, naming
    /// the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in [
            ("busyProbability", self.busy_probability),
            ("http500Probability", self.http500_probability),
            ("lostReplyProbability", self.lost_reply_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} {p} is not within 0..=1"));
            }
        }
        let statuses = [
            ("lostReplyStatus", Some(self.lost_reply_status)),
            ("outageStatus", self.outage_status),
        ];
        for (name, status) in statuses {
            if let Some(s) = status.filter(|s| !(200..=599).contains(s)) {
                return Err(format!("{name} {s} is not an HTTP status within 200..=599"));
            }
        }
        Ok(())
    }

    /// The outage's HTTP status if it is on at `now` (ms since the Unix epoch).
    pub fn outage_at(&self, now: u64) -> Option<u16> {
        self.outage_status
            .filter(|_| self.outage_until_ms.is_none_or(|until| now < until))
    }
}

/// The fake's starting configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FakeConfig {
    /// The apps; the first is the default for control calls without `appId`.
    pub apps: Vec<FakeApp>,
    /// Lifetime of an issued access token (WeChat: 7200 s).
    pub token_lifetime_ms: u64,
    /// How long the previous `/cgi-bin/token` token keeps working after a new one is issued
    /// (WeChat: 5 minutes; then it answers 40001). `stable_token` also renews its token this early, but at most half
    /// way through the lifetime.
    pub token_grace_ms: u64,
    /// Default lifetime of issued formIds and prepay_ids (WeChat: 7 days).
    pub credential_ttl_ms: u64,
    pub faults: Faults,
    /// Seed of the fake's random numbers (ids, fault rolls); `None` seeds from the OS.
    pub seed: Option<u64>,
    /// At most this many requests are recorded for [`crate::FakeWeChat::requests`]; later ones
    /// are only counted (`droppedRecords` in the stats).
    pub max_recorded_requests: usize,
}

pub const DEFAULT_APP_ID: &str = "wxfake0000000001";
pub const DEFAULT_SECRET: &str = "fakesecret00000000000000000000001";

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            apps: vec![FakeApp::new(DEFAULT_APP_ID, DEFAULT_SECRET)],
            token_lifetime_ms: 7_200_000,
            token_grace_ms: 300_000,
            credential_ttl_ms: 7 * 24 * 3_600_000,
            faults: Faults::default(),
            seed: None,
            max_recorded_requests: 200_000,
        }
    }
}

impl FakeConfig {
    /// The defaults with these apps instead of the default one.
    pub fn with_apps(apps: Vec<FakeApp>) -> Self {
        Self {
            apps,
            ..Self::default()
        }
    }
}
