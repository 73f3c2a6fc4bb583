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

/// Failures and limits the fake injects. Probabilities are in `[0, 1]`.
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
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            busy_probability: 0.0,
            http500_probability: 0.0,
            latency_ms: 0,
            send_quota_per_sec: None,
            minute_quota: None,
            refuse_subscribe_data: false,
            check_expiry_first: false,
        }
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
