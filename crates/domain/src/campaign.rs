//! The campaign message (contract sections 5 and 7): parsing and validation.
//!
//! [`parse_campaign`] turns raw broker bytes from the `<ns>.campaigns` exchange into a
//! [`Campaign`] — who to send to, which template, with what data — or a [`CampaignError`]
//! whose [`code`](CampaignError::code) the dispatcher puts in the dead-letter header.
//! Recipients with a malformed openId do not poison the campaign: they are listed in
//! [`Campaign::rejected_recipients`] so the dispatcher can count them. [`Campaign::job_for`]
//! builds the send job for one recipient.
//!
//! This module owns the format and its validation. It must never panic on any input, and it
//! does no I/O: whether an `appId` is configured, whether a user holds a credential, and
//! whether a campaign was already dispatched are decided elsewhere.
//!
//! Hostile input: the body is bounded (`max_bytes`) before it is parsed and the explicit
//! audience (`max_recipients`) before its entries are read. Template data is bounded too
//! ([`MAX_DATA_FIELDS`], [`MAX_DATA_BYTES`]), because the dispatcher copies it into every
//! recipient's send job: without a bound, one 1 MiB campaign of `"keywords": ",,,,…"` would
//! make each job tens of megabytes and a page of jobs tens of gigabytes. The campaign id and
//! openIds become parts of Redis keys and follow the name rules ([`crate::names`]).
//!
//! A subscribe campaign's `data` is also checked against WeChat's per-type value limits
//! ([`crate::subscribe_data`], the one table of them), so a campaign WeChat would refuse with
//! `47003` for every recipient is refused here once, as `invalid_data`.
//!
//! Per-recipient data (contract 8.1): `audience.recipients` lists objects, each an `openId`
//! with its own `data`, `page` and (template kind) `keywords`. Only the openId is checked as
//! the list is read; each entry is kept as its JSON text ([`Recipient`]), so a 1 MiB list costs
//! about 1 MiB however its data nests, and [`Campaign::job_for_recipient`] lays it over the
//! campaign's when that recipient's job is made, checking the result as a campaign's own data
//! is checked. A recipient whose result is refused gets a job of kind `invalid` (recorded
//! `invalid_data` by the sender, nothing spent) and the others go on. A campaign may come in
//! parts (`part`, `parts`): each part is its own message with the same `campaignId`.
//!
//! `quietHours` (contract 8.5) is `"defer"`, `"skip"` or `"ignore"` (anything else is
//! `invalid_quiet_hours`); it travels in each job, and the sender acts on it.
//!
//! Leniency, chosen once here so every caller agrees:
//! - a field whose value is JSON `null` counts as absent (top level and inside `audience`);
//! - unknown extra fields are ignored;
//! - `miniprogramState` and `lang` are read (and validated) only for `"kind": "subscribe"`;
//!   a template campaign ignores them.

use std::collections::{BTreeMap, HashSet};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::body::{raw_object, BodyError};
use crate::job::{check_campaign_id, DataItem, JobKind, SendJob};
use crate::names::{AppId, OpenId};
use crate::quiet::QuietMode;
use crate::subscribe_data::validate_subscribe_data;

/// Longest accepted `templateId`.
pub const MAX_TEMPLATE_ID_BYTES: usize = 128;
/// Longest accepted `page` (a mini-program path with its query string).
pub const MAX_PAGE_BYTES: usize = 1024;
/// Longest accepted `emphasisKeyword` (`keyword1.DATA` in practice).
pub const MAX_EMPHASIS_KEYWORD_BYTES: usize = 128;

/// Most template data fields (`keywords` entries, or `data` fields) a campaign may carry;
/// more is `invalid_keywords` or `invalid_data`.
pub const MAX_DATA_FIELDS: usize = 64;
/// Most bytes of template data (field names and values together, as sent) a campaign may
/// carry; more is `invalid_keywords` or `invalid_data`. The data is copied into every
/// recipient's send job, so this bounds each job, and a dispatcher page of jobs.
pub const MAX_DATA_BYTES: usize = 32 * 1024;

/// The `miniprogramState` values WeChat's subscribe API understands.
pub const MINIPROGRAM_STATES: [&str; 3] = ["developer", "trial", "formal"];
/// The `lang` values WeChat's subscribe API understands.
pub const LANGS: [&str; 4] = ["zh_CN", "en_US", "zh_HK", "zh_TW"];

/// Bounds on one campaign message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CampaignLimits {
    /// Largest body accepted, in bytes (default 1 MiB: an explicit audience can be long).
    pub max_bytes: usize,
    /// Most entries accepted in `audience.openIds`, counted before duplicates and bad
    /// entries are removed (default 1,000,000).
    pub max_recipients: usize,
}

impl Default for CampaignLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_recipients: 1_000_000,
        }
    }
}

/// A valid campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// The idempotency key of the campaign; checked by [`check_campaign_id`].
    pub campaign_id: String,
    /// `None` means the install's default app.
    pub app_id: Option<AppId>,
    pub kind: CampaignKind,
    pub template_id: String,
    pub page: Option<String>,
    pub emphasis_keyword: Option<String>,
    pub audience: Audience,
    /// `audience.openIds` entries that were refused, and why (never fatal).
    pub rejected_recipients: RejectedRecipients,
    /// Which part of a campaign sent in parts this message is (`None`: the whole campaign).
    pub part: Option<Part>,
    /// `"receipts": true`: a receipt for each recipient's outcome (contract 8.3).
    pub receipts: bool,
    /// `"quietHours"`: what its jobs do in the app's quiet hours (contract 8.5); `None`: the
    /// default (`defer`; `ignore` for a single message).
    pub quiet_hours: Option<QuietMode>,
    /// `sendAt` (contract 8.5): nothing is sent before this time (Unix ms); `None`: at once.
    /// Checked here for its form ([`parse_send_at`]); how far ahead it may be needs a clock
    /// ([`Campaign::check_send_at`]).
    pub send_at_ms: Option<i64>,
}

/// The earliest `sendAt` accepted (2001-09-09T01:46:40Z, 10^12 ms): an earlier one is almost
/// certainly seconds given for milliseconds, which would send at once instead of at the time.
pub const MIN_SEND_AT_MS: i64 = 1_000_000_000_000;
/// The latest `sendAt` accepted by its form (9999-12-31T23:59:59.999Z), so that no time
/// arithmetic on it overflows; [`MAX_SEND_AHEAD`] bounds it against the clock.
pub const MAX_SEND_AT_MS: i64 = 253_402_300_799_999;
/// How far ahead of now a campaign may be scheduled (366 days).
pub const MAX_SEND_AHEAD: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Most parts a campaign may be sent in.
pub const MAX_PARTS: u32 = 10_000;

/// One part of a campaign sent in parts (contract 8.1): `index` of `count`, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub count: u32,
}

/// One entry of `audience.recipients`: a checked openId, and the entry as it came (its JSON
/// object text), laid over the campaign's data when its job is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub open_id: OpenId,
    entry: Box<str>,
}

impl Recipient {
    /// A recipient whose entry is `entry` (a JSON object; anything else is refused as
    /// `invalid_data` when its job is made).
    pub fn new(open_id: OpenId, entry: impl Into<Box<str>>) -> Self {
        Self {
            open_id,
            entry: entry.into(),
        }
    }

    /// Bytes held for this recipient.
    pub fn bytes(&self) -> usize {
        self.entry.len() + self.open_id.as_str().len()
    }
}

/// What kind of WeChat message the campaign sends, with its template data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignKind {
    /// Spends formIds/prepayIds; `/cgi-bin/message/wxopen/template/send`.
    /// `data` is field (`keyword1`, ...) → value, with whatever else the campaign gave beside
    /// it (`color`, ...) passed through.
    Template { data: BTreeMap<String, DataItem> },
    /// Spends one consent for the template; `/cgi-bin/message/subscribe/send`.
    /// `data` is field → `{"value": ...}` object, passed to WeChat as it is.
    Subscribe {
        data: Map<String, Value>,
        miniprogram_state: Option<String>,
        lang: Option<String>,
    },
}

impl CampaignKind {
    /// `"template"` or `"subscribe"`, as in the message.
    pub fn name(&self) -> &'static str {
        match self {
            CampaignKind::Template { .. } => "template",
            CampaignKind::Subscribe { .. } => "subscribe",
        }
    }
}

/// Who the campaign is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every user holding a usable credential (for subscribe: a consent for the template).
    All,
    /// These users: valid, without duplicates, in first-seen order, never empty.
    OpenIds(Vec<OpenId>),
    /// These users, each with data of their own (`audience.recipients`): valid openIds,
    /// without duplicates (the first entry of an openId counts), in order, never empty.
    Recipients(Vec<Recipient>),
}

impl Audience {
    /// How many recipients an explicit audience lists (`None` for [`Audience::All`]).
    pub fn listed(&self) -> Option<usize> {
        match self {
            Audience::All => None,
            Audience::OpenIds(l) => Some(l.len()),
            Audience::Recipients(l) => Some(l.len()),
        }
    }
}

/// The `audience.openIds` entries that were refused: how many, and the first
/// [`RejectedRecipients::KEPT`] of them with why (a list of a million bad entries costs what
/// ten do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectedRecipients {
    pub count: usize,
    pub first: Vec<RejectedRecipient>,
}

impl RejectedRecipients {
    /// How many refused entries are kept with their reason.
    pub const KEPT: usize = 10;

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, index: usize, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.len() < Self::KEPT {
            self.first.push(RejectedRecipient {
                index,
                reason: reason(),
            });
        }
    }
}

/// One `audience.openIds` entry that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecipient {
    /// Position in `audience.openIds`.
    pub index: usize,
    pub reason: String,
}

/// Why a whole campaign cannot be used. It goes to the dead-letter queue with this reason.
///
/// The messages never echo the offending input, so they are safe and short in a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    #[error("message is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("message is not valid UTF-8")]
    NotUtf8,
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is not a JSON object")]
    NotObject,
    #[error("campaignId is missing")]
    MissingCampaignId,
    #[error("campaignId is invalid: {0}")]
    InvalidCampaignId(String),
    #[error("templateId is missing")]
    MissingTemplateId,
    #[error("templateId is invalid: {0}")]
    InvalidTemplateId(String),
    #[error("page is invalid: {0}")]
    InvalidPage(String),
    #[error("emphasisKeyword is invalid: {0}")]
    InvalidEmphasisKeyword(String),
    #[error("appId is invalid: {0}")]
    InvalidAppId(String),
    #[error("kind is invalid: {0}")]
    InvalidKind(String),
    #[error("miniprogramState is invalid: {0}")]
    InvalidMiniprogramState(String),
    #[error("lang is invalid: {0}")]
    InvalidLang(String),
    #[error("keywords is invalid: {0}")]
    InvalidKeywords(String),
    #[error("template data is invalid: {0}")]
    InvalidData(String),
    #[error("audience is missing")]
    MissingAudience,
    #[error("audience is invalid: {0}")]
    InvalidAudience(String),
    #[error("audience lists {len} openIds, over the limit of {max}")]
    TooManyRecipients { len: usize, max: usize },
    #[error("audience has no valid openId: {rejected} entries rejected{detail}")]
    EmptyAudience { rejected: usize, detail: String },
    #[error("quietHours is invalid: {0}")]
    InvalidQuietHours(String),
    #[error("part is invalid: {0}")]
    InvalidPart(String),
    #[error("sendAt is invalid: {0}")]
    InvalidSendAt(String),
}

impl From<BodyError> for CampaignError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { len, max } => CampaignError::TooLarge { len, max },
            BodyError::NotUtf8 => CampaignError::NotUtf8,
            BodyError::NotJson(e) => CampaignError::NotJson(e),
            BodyError::NotObject => CampaignError::NotObject,
        }
    }
}

impl CampaignError {
    /// A short stable code for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CampaignError::TooLarge { .. } => "too_large",
            CampaignError::NotUtf8 => "not_utf8",
            CampaignError::NotJson(_) => "not_json",
            CampaignError::NotObject => "not_object",
            CampaignError::MissingCampaignId => "missing_campaign_id",
            CampaignError::InvalidCampaignId(_) => "invalid_campaign_id",
            CampaignError::MissingTemplateId => "missing_template_id",
            CampaignError::InvalidTemplateId(_) => "invalid_template_id",
            CampaignError::InvalidPage(_) => "invalid_page",
            CampaignError::InvalidEmphasisKeyword(_) => "invalid_emphasis_keyword",
            CampaignError::InvalidAppId(_) => "invalid_app_id",
            CampaignError::InvalidKind(_) => "invalid_kind",
            CampaignError::InvalidMiniprogramState(_) => "invalid_miniprogram_state",
            CampaignError::InvalidLang(_) => "invalid_lang",
            CampaignError::InvalidKeywords(_) => "invalid_keywords",
            CampaignError::InvalidData(_) => "invalid_data",
            CampaignError::MissingAudience => "missing_audience",
            CampaignError::InvalidAudience(_) => "invalid_audience",
            CampaignError::TooManyRecipients { .. } => "too_many_recipients",
            CampaignError::EmptyAudience { .. } => "empty_audience",
            CampaignError::InvalidPart(_) => "invalid_part",
            CampaignError::InvalidQuietHours(_) => "invalid_quiet_hours",
            CampaignError::InvalidSendAt(_) => "invalid_send_at",
        }
    }
}

impl Campaign {
    /// The send job for one recipient: attempt 0, no held credential. A subscribe campaign's
    /// job carries `kind: subscribe`, its data as field → value, `miniprogramState` and
    /// `lang`. Always `Some` (the `Option` is kept for callers written when subscribe jobs
    /// did not exist yet).
    ///
    /// It does not check that `open_id` belongs to the audience (for [`Audience::All`] the
    /// recipients come from the credential bank).
    pub fn job_for(&self, open_id: &OpenId) -> Option<SendJob> {
        Some(self.job_for_user(open_id))
    }

    /// [`Campaign::job_for`], without the `Option`.
    pub fn job_for_user(&self, open_id: &OpenId) -> SendJob {
        self.job_with(open_id.as_str().to_owned())
    }

    fn job_with(&self, open_id: String) -> SendJob {
        let (kind, data, miniprogram_state, lang) = match &self.kind {
            CampaignKind::Template { data } => (JobKind::Template, data.clone(), None, None),
            CampaignKind::Subscribe {
                data,
                miniprogram_state,
                lang,
            } => (
                JobKind::Subscribe,
                subscribe_values(data),
                miniprogram_state.clone(),
                lang.clone(),
            ),
        };
        SendJob {
            campaign_id: self.campaign_id.clone(),
            app_id: self.app_id.as_ref().map(|a| a.as_str().to_owned()),
            open_id,
            template_id: self.template_id.clone(),
            page: self.page.clone(),
            data,
            emphasis_keyword: self.emphasis_keyword.clone(),
            attempt: 0,
            retrying_since: None,
            kind,
            miniprogram_state,
            lang,
            invalid: None,
            single: false,
            receipts: self.receipts,
            quiet_hours: self.quiet_hours,
            defer_until: None,
        }
    }

    /// The send job for one recipient of `audience.recipients`: the campaign's, with the
    /// recipient's `data` fields laid over the campaign's (the recipient's win), its `page`
    /// instead of the campaign's, and (template kind) its `keywords` replacing the campaign's
    /// `keywordN` position by position; checked as a campaign's own data is. A recipient
    /// whose result is refused gets a job of kind [`JobKind::Invalid`] carrying the reason and
    /// no data, which the sender records as `invalid_data`.
    pub fn job_for_recipient(&self, r: &Recipient) -> SendJob {
        let open_id = r.open_id.as_str().to_owned();
        match self.personal_job(r, open_id.clone()) {
            Ok(job) => job,
            Err(e) => {
                let mut job = self.job_with(open_id);
                job.kind = JobKind::Invalid;
                job.data.clear();
                job.page = None;
                job.emphasis_keyword = None;
                job.miniprogram_state = None;
                job.lang = None;
                job.invalid = Some(e.to_string());
                job
            }
        }
    }

    fn personal_job(&self, r: &Recipient, open_id: String) -> Result<SendJob, CampaignError> {
        let entry: Map<String, Value> = serde_json::from_str(&r.entry)
            .map_err(|_| CampaignError::InvalidData("the recipient is not an object".into()))?;
        let mut job = self.job_with(open_id);
        match field(&entry, "page") {
            None => {}
            Some(Value::String(p)) => {
                check_text(p, MAX_PAGE_BYTES, false).map_err(CampaignError::InvalidPage)?;
                job.page = Some(p.clone());
            }
            Some(_) => return Err(CampaignError::InvalidPage("not a string".into())),
        }
        let keywords = field(&entry, "keywords");
        let data = field(&entry, "data");
        if keywords.is_some() && data.is_some() {
            return Err(CampaignError::InvalidData(
                "give keywords or data, not both".into(),
            ));
        }
        match &self.kind {
            CampaignKind::Template { data: base } => {
                let mut merged = base.clone();
                match (keywords, data) {
                    (Some(k), _) => merged.extend(keyword_data(k)?),
                    (None, Some(d)) => merged.extend(template_data(d)?),
                    (None, None) => {}
                }
                check_merged(merged.len(), data_bytes(&merged))?;
                job.data = merged;
            }
            CampaignKind::Subscribe { data: base, .. } => {
                if keywords.is_some() {
                    return Err(CampaignError::InvalidData(
                        "a subscribe campaign takes data, not keywords".into(),
                    ));
                }
                let mut merged = base.clone();
                if let Some(d) = data {
                    merged.extend(subscribe_fields(d)?);
                }
                if merged.is_empty() {
                    return Err(CampaignError::InvalidData(
                        "neither the campaign nor the recipient gives data".into(),
                    ));
                }
                let bytes = serde_json::to_vec(&merged).map_or(usize::MAX, |v| v.len());
                check_merged(merged.len(), bytes)?;
                validate_subscribe_data(&merged)
                    .map_err(|e| CampaignError::InvalidData(e.to_string()))?;
                job.data = subscribe_values(&merged);
            }
        }
        Ok(job)
    }

    /// The send job every recipient's job is made from, with an empty `openId`: what the
    /// campaign record keeps so that `wxpush campaign retry` can send to a recipient again
    /// without the campaign's message ([`SendJob::for_recipient`]).
    pub fn job_template(&self) -> SendJob {
        self.job_with(String::new())
    }
}

/// Merged data keeps a campaign's bounds: [`MAX_DATA_FIELDS`] fields, [`MAX_DATA_BYTES`].
fn check_merged(fields: usize, bytes: usize) -> Result<(), CampaignError> {
    if fields > MAX_DATA_FIELDS {
        return Err(CampaignError::InvalidData(format!(
            "{fields} fields, over the limit of {MAX_DATA_FIELDS}"
        )));
    }
    if bytes > MAX_DATA_BYTES {
        return Err(too_many_data_bytes(bytes));
    }
    Ok(())
}

/// A subscribe campaign's `{"field": {"value": v}}` as the job's field → value (a string
/// value as it is, any other JSON value as its JSON text).
fn subscribe_values(data: &Map<String, Value>) -> BTreeMap<String, DataItem> {
    data.iter()
        .map(|(k, v)| {
            let inner = v.get("value").unwrap_or(v);
            let text = match inner {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), DataItem::text(text))
        })
        .collect()
}

/// Parse and validate one campaign message.
///
/// Template data is given in exactly one of two ways (or not at all, for a template
/// campaign: then its data is empty):
/// - `keywords`: an array of strings, or one comma-separated string as the seed sends
///   (`"a,b,c"`), mapped in order to `keyword1..keywordN`. The string is split on every
///   `,` and nothing is trimmed (`"a, b"` gives `"a"` and `" b"`; `"a,,b"` gives an empty
///   `keyword2`); the empty string means no keywords. Not allowed for subscribe campaigns.
/// - `data`: an object. For a template campaign each value is a string or an object with a
///   string `value`; its other fields (`color`, or any WeChat may read) are passed through as
///   they are (contract section 5), within the same size bound. For a subscribe campaign (which
///   requires `data`, with at least one field) each value is kept as a `{"value": ...}`
///   object (a plain string `s` becomes `{"value": s}`), and each field must keep WeChat's
///   limit for its type ([`validate_subscribe_data`]): `thing1` at most 20 characters, and
///   so on; a violation is `invalid_data` naming the field, its type and the limit.
pub fn parse_campaign(body: &[u8], limits: CampaignLimits) -> Result<Campaign, CampaignError> {
    let raw = raw_object(body, limits.max_bytes)?;
    let obj = known_fields(&raw)?;

    let campaign_id = match field(&obj, "campaignId") {
        None => return Err(CampaignError::MissingCampaignId),
        Some(Value::String(s)) => {
            check_campaign_id(s).map_err(|e| CampaignError::InvalidCampaignId(e.to_string()))?;
            s.clone()
        }
        Some(_) => return Err(CampaignError::InvalidCampaignId("not a string".into())),
    };
    let app_id = match field(&obj, "appId") {
        None => None,
        Some(Value::String(s)) => {
            Some(AppId::new(s).map_err(|e| CampaignError::InvalidAppId(e.to_string()))?)
        }
        Some(_) => return Err(CampaignError::InvalidAppId("not a string".into())),
    };
    let subscribe = match field(&obj, "kind") {
        None => false,
        Some(Value::String(s)) if s == "template" => false,
        Some(Value::String(s)) if s == "subscribe" => true,
        Some(_) => {
            return Err(CampaignError::InvalidKind(
                "must be \"template\" or \"subscribe\"".into(),
            ))
        }
    };
    let template_id = match field(&obj, "templateId") {
        None => return Err(CampaignError::MissingTemplateId),
        Some(Value::String(s)) => {
            check_text(s, MAX_TEMPLATE_ID_BYTES, false)
                .map_err(CampaignError::InvalidTemplateId)?;
            s.clone()
        }
        Some(_) => return Err(CampaignError::InvalidTemplateId("not a string".into())),
    };
    let page = optional_text(&obj, "page", MAX_PAGE_BYTES).map_err(CampaignError::InvalidPage)?;
    let emphasis_keyword = optional_text(&obj, "emphasisKeyword", MAX_EMPHASIS_KEYWORD_BYTES)
        .map_err(CampaignError::InvalidEmphasisKeyword)?;

    let keywords = field(&obj, "keywords");
    let data = field(&obj, "data");
    if keywords.is_some() && data.is_some() {
        return Err(CampaignError::InvalidData(
            "give keywords or data, not both".into(),
        ));
    }
    let kind = if subscribe {
        // Consents are stored under template ids checked this way; any other id would find
        // no consent for anyone.
        crate::credential::check_template_id(&template_id)
            .map_err(|e| CampaignError::InvalidTemplateId(e.to_string()))?;
        if keywords.is_some() {
            return Err(CampaignError::InvalidData(
                "a subscribe campaign takes data, not keywords".into(),
            ));
        }
        // Checked once the audience is known: recipients may carry all of it (8.1).
        let data = match data {
            Some(d) => subscribe_fields(d)?,
            None => Map::new(),
        };
        CampaignKind::Subscribe {
            data,
            miniprogram_state: one_of(&obj, "miniprogramState", &MINIPROGRAM_STATES)
                .map_err(CampaignError::InvalidMiniprogramState)?,
            lang: one_of(&obj, "lang", &LANGS).map_err(CampaignError::InvalidLang)?,
        }
    } else {
        let data = match (keywords, data) {
            (Some(k), _) => keyword_data(k)?,
            (None, Some(d)) => template_data(d)?,
            (None, None) => BTreeMap::new(),
        };
        CampaignKind::Template { data }
    };

    let part = parse_part(&obj)?;
    let send_at_ms = parse_send_at(field(&obj, "sendAt"))?;
    let receipts = match field(&obj, "receipts") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(CampaignError::InvalidData(
                "receipts is not true or false".into(),
            ))
        }
    };
    let quiet_hours = match field(&obj, "quietHours") {
        None => None,
        Some(v) => Some(v.as_str().and_then(QuietMode::parse).ok_or_else(|| {
            CampaignError::InvalidQuietHours(format!(
                "not one of {}",
                QuietMode::NAMES.map(|n| format!("\"{n}\"")).join(", ")
            ))
        })?),
    };
    let (audience, rejected_recipients) = parse_audience(raw.get("audience").copied(), limits)?;
    if let CampaignKind::Subscribe { data, .. } = &kind {
        let personal = matches!(audience, Audience::Recipients(_));
        if data.is_empty() && !personal {
            return Err(CampaignError::InvalidData(
                if field(&obj, "data").is_none() {
                    "a subscribe campaign needs data"
                } else {
                    "a subscribe campaign needs at least one data field"
                }
                .into(),
            ));
        }
        // Bounded first (subscribe_fields), so the per-type checks only ever see 32 KiB.
        validate_subscribe_data(data).map_err(|e| CampaignError::InvalidData(e.to_string()))?;
    }

    Ok(Campaign {
        campaign_id,
        app_id,
        kind,
        template_id,
        page,
        emphasis_keyword,
        audience,
        rejected_recipients,
        part,
        receipts,
        quiet_hours,
        send_at_ms,
    })
}

/// `sendAt` (contract 8.5): absent (or `null`), or a JSON integer of Unix milliseconds from
/// [`MIN_SEND_AT_MS`] to [`MAX_SEND_AT_MS`]. Not a string, not a fraction, not negative.
pub fn parse_send_at(v: Option<&Value>) -> Result<Option<i64>, CampaignError> {
    let Some(v) = v else { return Ok(None) };
    let bad = |why: &str| Err(CampaignError::InvalidSendAt(why.into()));
    let Some(n) = v.as_i64() else {
        return match v {
            Value::Number(n) if n.is_u64() => bad("too far ahead"),
            Value::Number(_) => bad("not a whole number of milliseconds"),
            _ => bad("not a number (Unix time in milliseconds)"),
        };
    };
    if n < 0 {
        return bad("negative");
    }
    if n < MIN_SEND_AT_MS {
        return bad("before 2001: Unix time in milliseconds is wanted (seconds given?)");
    }
    if n > MAX_SEND_AT_MS {
        return bad("too far ahead");
    }
    Ok(Some(n))
}

impl Campaign {
    /// Refuses a `sendAt` more than [`MAX_SEND_AHEAD`] after `now_ms` (the dispatcher's
    /// clock: a bound this wide does not care about a few seconds of skew).
    pub fn check_send_at(&self, now_ms: i64) -> Result<(), CampaignError> {
        let ahead = i64::try_from(MAX_SEND_AHEAD.as_millis()).unwrap_or(i64::MAX);
        match self.send_at_ms {
            Some(t) if t > now_ms.saturating_add(ahead) => Err(CampaignError::InvalidSendAt(
                format!("more than {} days ahead", MAX_SEND_AHEAD.as_secs() / 86_400),
            )),
            _ => Ok(()),
        }
    }
}

/// `part` and `parts` (contract 8.1): both or neither, `1 <= part <= parts <= MAX_PARTS`.
fn parse_part(obj: &Map<String, Value>) -> Result<Option<Part>, CampaignError> {
    let number = |key: &str| -> Result<Option<u32>, CampaignError> {
        match field(obj, key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_PARTS).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    CampaignError::InvalidPart(format!(
                        "{key} is not a whole number from 1 to {MAX_PARTS}"
                    ))
                }),
        }
    };
    match (number("part")?, number("parts")?) {
        (None, None) => Ok(None),
        (Some(index), Some(count)) if index <= count => Ok(Some(Part { index, count })),
        (Some(_), Some(_)) => Err(CampaignError::InvalidPart("part is over parts".into())),
        _ => Err(CampaignError::InvalidPart(
            "give part and parts together".into(),
        )),
    }
}

/// The fields a campaign is read from, but `audience` (read as it streams, [`parse_audience`]),
/// each parsed from its JSON text; unknown fields are never parsed (they cost nothing). The
/// template data, the one field of unbounded shape that every job copies, is measured before
/// it is parsed: far over [`MAX_DATA_BYTES`] as JSON text, it is refused unread.
fn known_fields(raw: &BTreeMap<String, &RawValue>) -> Result<Map<String, Value>, CampaignError> {
    const KNOWN: [&str; 15] = [
        "campaignId",
        "appId",
        "kind",
        "templateId",
        "page",
        "emphasisKeyword",
        "keywords",
        "data",
        "miniprogramState",
        "lang",
        "part",
        "parts",
        "receipts",
        "quietHours",
        "sendAt",
    ];
    let mut obj = Map::new();
    for key in KNOWN {
        let Some(text) = raw.get(key).map(|r| r.get()) else {
            continue;
        };
        if text.len() > MAX_DATA_TEXT_BYTES {
            let bytes = text.len();
            return Err(match key {
                "keywords" => CampaignError::InvalidKeywords(format!(
                    "{bytes} bytes of JSON, over the limit of {MAX_DATA_BYTES} bytes of keywords"
                )),
                "data" => too_many_data_bytes(bytes),
                // Names and ids: their own bounds (a few hundred bytes) refuse them below.
                _ => CampaignError::NotJson(format!("{key} is {bytes} bytes of JSON")),
            });
        }
        let value =
            serde_json::from_str(text).map_err(|e| CampaignError::NotJson(e.to_string()))?;
        obj.insert(key.to_owned(), value);
    }
    Ok(obj)
}

/// Longest JSON text of a field read as a tree: template data and keywords may be 32 KiB
/// ([`MAX_DATA_BYTES`]) as sent, more as JSON text (escapes, white space); eight times that
/// leaves room for any honest spelling and bounds the tree built from it.
const MAX_DATA_TEXT_BYTES: usize = 8 * MAX_DATA_BYTES;

/// The value of `key`, with JSON `null` counted as absent.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A string that goes verbatim into a WeChat request: bounded, no control characters;
/// unless `may_be_blank`, not empty or only whitespace.
fn check_text(s: &str, max: usize, may_be_blank: bool) -> Result<(), String> {
    if !may_be_blank && s.trim().is_empty() {
        return Err("empty".into());
    }
    if s.len() > max {
        return Err(format!("{} bytes, over the limit of {max}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

/// An optional non-blank string field.
fn optional_text(
    obj: &Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<String>, String> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => check_text(s, max, false).map(|()| Some(s.clone())),
        Some(_) => Err("not a string".into()),
    }
}

/// An optional string field restricted to `allowed`.
fn one_of(obj: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<Option<String>, String> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(_) => Err(format!("must be one of {}", allowed.join(", "))),
    }
}

/// `keywords` (array of strings, or one comma-separated string) → `keyword1..keywordN`.
fn keyword_data(keywords: &Value) -> Result<BTreeMap<String, DataItem>, CampaignError> {
    let count = match keywords {
        Value::String(s) if s.is_empty() => 0,
        Value::String(s) => s.bytes().filter(|&b| b == b',').count() + 1,
        Value::Array(items) => items.len(),
        _ => 0,
    };
    if count > MAX_DATA_FIELDS {
        return Err(CampaignError::InvalidKeywords(format!(
            "{count} keywords, over the limit of {MAX_DATA_FIELDS}"
        )));
    }
    let values: Vec<&str> = match keywords {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => s.split(',').collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().ok_or_else(|| {
                    CampaignError::InvalidKeywords(format!("entry {i} is not a string"))
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(CampaignError::InvalidKeywords(
                "neither an array of strings nor a comma-separated string".into(),
            ))
        }
    };
    let data: BTreeMap<String, DataItem> = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("keyword{}", i + 1), DataItem::text(v)))
        .collect();
    let bytes = data_bytes(&data);
    if bytes > MAX_DATA_BYTES {
        return Err(CampaignError::InvalidKeywords(format!(
            "{bytes} bytes of keywords, over the limit of {MAX_DATA_BYTES}"
        )));
    }
    Ok(data)
}

/// The size of template data as the job carries it: field names, values and what else each
/// field carries.
fn data_bytes(data: &BTreeMap<String, DataItem>) -> usize {
    data.iter()
        .map(|(k, v)| k.len().saturating_add(v.bytes()))
        .fold(0, usize::saturating_add)
}

/// Refuses a `data` object with more than [`MAX_DATA_FIELDS`] fields.
fn check_field_count(fields: &Map<String, Value>) -> Result<(), CampaignError> {
    if fields.len() > MAX_DATA_FIELDS {
        return Err(CampaignError::InvalidData(format!(
            "{} fields, over the limit of {MAX_DATA_FIELDS}",
            fields.len()
        )));
    }
    Ok(())
}

fn too_many_data_bytes(bytes: usize) -> CampaignError {
    CampaignError::InvalidData(format!(
        "{bytes} bytes of data, over the limit of {MAX_DATA_BYTES}"
    ))
}

/// Template-kind `data`: field → string, or an object with a string `value` whose other
/// fields are kept as they are. What protects the fleet is checked (an object of such fields,
/// their number and total size, their names); the rest is WeChat's to judge.
fn template_data(data: &Value) -> Result<BTreeMap<String, DataItem>, CampaignError> {
    let Value::Object(fields) = data else {
        return Err(CampaignError::InvalidData("data is not an object".into()));
    };
    check_field_count(fields)?;
    let mut out = BTreeMap::new();
    for (name, value) in fields {
        check_field_name(name)?;
        let item = DataItem::from_json(value).ok_or_else(|| {
            CampaignError::InvalidData(format!(
                "field {name:?} is neither a string nor an object with a string \"value\""
            ))
        })?;
        out.insert(name.clone(), item);
    }
    let bytes = data_bytes(&out);
    if bytes > MAX_DATA_BYTES {
        return Err(too_many_data_bytes(bytes));
    }
    Ok(out)
}

/// Subscribe-kind `data` (a campaign's or a recipient's): field → `{"value": string or
/// number, ...}`, kept as it is (a plain string becomes `{"value": s}`), bounded; the
/// per-type checks ([`validate_subscribe_data`]) are the caller's, on the merged data.
fn subscribe_fields(data: &Value) -> Result<Map<String, Value>, CampaignError> {
    let Value::Object(fields) = data else {
        return Err(CampaignError::InvalidData("data is not an object".into()));
    };
    check_field_count(fields)?;
    let mut out = Map::new();
    for (name, value) in fields {
        check_field_name(name)?;
        let kept = match value {
            Value::String(s) => Value::Object(Map::from_iter([(
                "value".to_owned(),
                Value::String(s.clone()),
            )])),
            Value::Object(o)
                if matches!(o.get("value"), Some(Value::String(_) | Value::Number(_))) =>
            {
                value.clone()
            }
            _ => {
                return Err(CampaignError::InvalidData(format!(
                    "field {name:?} is not {{\"value\": ...}} with a string or number"
                )))
            }
        };
        out.insert(name.clone(), kept);
    }
    // Kept as given (objects may carry more than "value"): measured as it will be sent.
    let bytes = serde_json::to_vec(&out).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_DATA_BYTES {
        return Err(too_many_data_bytes(bytes));
    }
    Ok(out)
}

/// Data field names (`keyword1`, `thing1`, ...) are short identifiers; refusing odd ones
/// also keeps the error messages that quote them short.
fn check_field_name(name: &str) -> Result<(), CampaignError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CampaignError::InvalidData(
            "a field name is not 1 to 64 letters, digits, _, . or -".into(),
        ))
    }
}

/// `{"all": true}` or `{"openIds": [...]}`, read as it streams from its JSON text: each openId
/// is checked as it is read and only valid ones are kept, so a 1 MiB list costs what its valid
/// openIds take, whatever else it holds. Other fields of `audience` are skipped unread.
fn parse_audience(
    audience: Option<&RawValue>,
    limits: CampaignLimits,
) -> Result<(Audience, RejectedRecipients), CampaignError> {
    let Some(audience) = audience.filter(|a| a.get() != "null") else {
        return Err(CampaignError::MissingAudience);
    };
    let read: ReadAudience = serde::de::DeserializeSeed::deserialize(
        AudienceSeed(limits.max_recipients),
        &mut serde_json::Deserializer::from_str(audience.get()),
    )
    // The body was read as JSON already: what fails here is nesting past serde_json's limit.
    .map_err(|e| CampaignError::NotJson(e.to_string()))?;
    let ReadAudience::Object {
        all,
        open_ids,
        recipients,
    } = read
    else {
        return Err(CampaignError::InvalidAudience("not an object".into()));
    };
    let all = all.filter(|v| !v.is_null());
    if let Some(recipients) = recipients {
        if all.is_some() || open_ids.is_some() {
            return Err(CampaignError::InvalidAudience(
                "give one of all, openIds or recipients".into(),
            ));
        }
        return recipients_audience(recipients, limits);
    }
    let list = match (all, open_ids) {
        (Some(_), Some(_)) => {
            return Err(CampaignError::InvalidAudience(
                "give all or openIds, not both".into(),
            ))
        }
        (Some(Value::Bool(true)), None) => {
            return Ok((Audience::All, RejectedRecipients::default()))
        }
        (Some(_), None) => {
            return Err(CampaignError::InvalidAudience(
                "all must be true (list the openIds instead)".into(),
            ))
        }
        (None, None) => {
            return Err(CampaignError::InvalidAudience(
                "neither all nor openIds".into(),
            ))
        }
        (None, Some(ReadList::NotArray)) => {
            return Err(CampaignError::InvalidAudience(
                "openIds is not an array".into(),
            ))
        }
        (None, Some(ReadList::TooMany { len })) => {
            return Err(CampaignError::TooManyRecipients {
                len,
                max: limits.max_recipients,
            })
        }
        (None, Some(ReadList::Entries { open_ids, rejected })) => (open_ids, rejected),
    };
    let (mut open_ids, rejected) = list;
    // Duplicates out, first-seen order kept.
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(open_ids.len());
        open_ids.iter().map(|id| seen.insert(id.as_str())).collect()
    };
    let mut keep = keep.into_iter();
    open_ids.retain(|_| keep.next().unwrap_or(false));
    if open_ids.is_empty() {
        let detail = rejected
            .first
            .first()
            .map(|r| format!(" (entry {}: {})", r.index, r.reason))
            .unwrap_or_default();
        return Err(CampaignError::EmptyAudience {
            rejected: rejected.len(),
            detail,
        });
    }
    Ok((Audience::OpenIds(open_ids), rejected))
}

/// `audience.recipients` as read into an audience: duplicates out (the first entry of an
/// openId counts), at least one recipient.
fn recipients_audience(
    read: ReadList<Recipient>,
    limits: CampaignLimits,
) -> Result<(Audience, RejectedRecipients), CampaignError> {
    let (mut list, rejected) = match read {
        ReadList::NotArray => {
            return Err(CampaignError::InvalidAudience(
                "recipients is not an array".into(),
            ))
        }
        ReadList::TooMany { len } => {
            return Err(CampaignError::TooManyRecipients {
                len,
                max: limits.max_recipients,
            })
        }
        ReadList::Entries { open_ids, rejected } => (open_ids, rejected),
    };
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(list.len());
        list.iter()
            .map(|r| seen.insert(r.open_id.as_str()))
            .collect()
    };
    let mut keep = keep.into_iter();
    list.retain(|_| keep.next().unwrap_or(false));
    if list.is_empty() {
        let detail = rejected
            .first
            .first()
            .map(|r| format!(" (entry {}: {})", r.index, r.reason))
            .unwrap_or_default();
        return Err(CampaignError::EmptyAudience {
            rejected: rejected.len(),
            detail,
        });
    }
    Ok((Audience::Recipients(list), rejected))
}

/// What the audience's JSON held, read without building it as a tree.
enum ReadAudience {
    NotObject,
    Object {
        all: Option<Value>,
        /// `None` when absent or `null`.
        open_ids: Option<ReadList>,
        /// `None` when absent or `null`.
        recipients: Option<ReadList<Recipient>>,
    },
}

/// `audience.openIds` (or `audience.recipients`) as read.
enum ReadList<T = OpenId> {
    NotArray,
    /// Over the limit: how many entries there were (none of them kept).
    TooMany {
        len: usize,
    },
    Entries {
        open_ids: Vec<T>,
        rejected: RejectedRecipients,
    },
}

/// Reads the audience value (at most `.0` openIds kept).
struct AudienceSeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for AudienceSeed {
    type Value = ReadAudience;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AudienceSeed {
    type Value = ReadAudience;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an audience object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut all, mut open_ids, mut recipients) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                // The last of a key given twice counts, as for every other field.
                "all" => all = Some(map.next_value::<Value>()?),
                "openIds" => open_ids = map.next_value_seed(ListSeed::new(self.0))?,
                "recipients" => recipients = map.next_value_seed(ListSeed::new(self.0))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(ReadAudience::Object {
            all,
            open_ids,
            recipients,
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(ReadAudience::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(ReadAudience::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ReadAudience::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ReadAudience::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ReadAudience::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ReadAudience::NotObject)
    }
}

/// Reads `audience.openIds` or `audience.recipients` (at most `.0` entries kept), each entry
/// checked as it is read ([`ListEntry`]): a refused one is counted with its reason, past the
/// limit the rest is counted and nothing kept.
struct ListSeed<T>(usize, std::marker::PhantomData<T>);

impl<T> ListSeed<T> {
    fn new(max: usize) -> Self {
        Self(max, std::marker::PhantomData)
    }
}

/// What one list entry is read as, and how it is checked.
trait ListEntry: Sized {
    /// The entry as read from the list (without building more than the check needs).
    type Read: for<'de> serde::Deserialize<'de>;
    /// The kept entry, or why it is refused.
    fn check(read: Self::Read) -> Result<Self, String>;
}

/// An `audience.openIds` entry: a string that is an openId.
impl ListEntry for OpenId {
    type Read = Entry;
    fn check(read: Entry) -> Result<Self, String> {
        match read {
            Entry::Checked(r) => r.map_err(|e| e.to_string()),
            Entry::Other => Err("not a string".into()),
        }
    }
}

/// An `audience.recipients` entry: its text kept as it came, once its `openId` is checked (an
/// entry that is not an object with a valid `openId` is refused as a bad `openIds` entry is).
impl ListEntry for Recipient {
    type Read = Box<RawValue>;
    fn check(read: Box<RawValue>) -> Result<Self, String> {
        recipient_of(&read).map(|open_id| Recipient::new(open_id, Box::<str>::from(read)))
    }
}

impl<'de, T: ListEntry> serde::de::DeserializeSeed<'de> for ListSeed<T> {
    type Value = Option<ReadList<T>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: ListEntry> serde::de::Visitor<'de> for ListSeed<T> {
    type Value = Option<ReadList<T>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut open_ids = Vec::new();
        let mut rejected = RejectedRecipients::default();
        let mut index = 0;
        while let Some(entry) = seq.next_element::<T::Read>()? {
            if index >= self.0 {
                // Over the limit: count the rest, keep nothing.
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    index += 1;
                }
                return Ok(Some(ReadList::TooMany { len: index + 1 }));
            }
            match T::check(entry) {
                Ok(kept) => open_ids.push(kept),
                Err(why) => rejected.push(index, || why),
            }
            index += 1;
        }
        Ok(Some(ReadList::Entries { open_ids, rejected }))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Some(ReadList::NotArray))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some(ReadList::NotArray))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(ReadList::NotArray))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(ReadList::NotArray))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some(ReadList::NotArray))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(ReadList::NotArray))
    }
}

/// The checked `openId` of one `audience.recipients` entry, or why it has none.
fn recipient_of(entry: &RawValue) -> Result<OpenId, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "openId")]
        open_id: Option<Entry>,
    }
    let text = entry.get();
    if !text.starts_with('{') {
        return Err("not an object".into());
    }
    match serde_json::from_str::<Head>(text) {
        Ok(Head {
            open_id: Some(Entry::Checked(r)),
        }) => r.map_err(|e| e.to_string()),
        Ok(Head {
            open_id: Some(Entry::Other),
        }) => Err("openId is not a string".into()),
        Ok(Head { open_id: None }) => Err("openId is missing".into()),
        Err(_) => Err("not a recipient object".into()),
    }
}

/// One entry of `audience.openIds`, checked as it is read: a string is an openId or why it is
/// not (nothing of an invalid one is copied); anything else is skipped unread.
enum Entry {
    Checked(Result<OpenId, crate::names::NameError>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an openId")
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Entry::Checked(OpenId::new(s)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Entry::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Entry::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Entry::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Entry::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Entry::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Entry::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Entry::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<Campaign, CampaignError> {
        parse_campaign(s.as_bytes(), CampaignLimits::default())
    }

    fn template_data_of(c: &Campaign) -> &BTreeMap<String, DataItem> {
        match &c.kind {
            CampaignKind::Template { data } => data,
            other => panic!("not a template campaign: {other:?}"),
        }
    }

    fn keywords(pairs: &[(&str, &str)]) -> BTreeMap<String, DataItem> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), DataItem::text(*v)))
            .collect()
    }

    #[test]
    fn accepts_the_section_5_example() {
        let c = parse(
            r#"{"campaignId": "signin-2026-11-28", "templateId": "TPL_SIGNIN",
             "page": "pages/signin/index?from=push",
             "keywords": ["Daily check-in", "Tap to keep your streak"],
             "emphasisKeyword": "keyword1.DATA",
             "audience": {"all": true}}"#,
        )
        .unwrap();
        assert_eq!(c.campaign_id, "signin-2026-11-28");
        assert_eq!(c.app_id, None);
        assert_eq!(c.template_id, "TPL_SIGNIN");
        assert_eq!(c.page.as_deref(), Some("pages/signin/index?from=push"));
        assert_eq!(c.emphasis_keyword.as_deref(), Some("keyword1.DATA"));
        assert_eq!(c.audience, Audience::All);
        assert!(c.rejected_recipients.is_empty());
        assert_eq!(
            template_data_of(&c),
            &keywords(&[
                ("keyword1", "Daily check-in"),
                ("keyword2", "Tap to keep your streak")
            ])
        );
    }

    #[test]
    fn accepts_the_section_7_subscribe_example() {
        // With thing1 cut to 18 characters: the contract's "Your order has shipped" is 22,
        // over WeChat's 20 (see section_7_example_as_written_is_refused_for_its_thing1).
        let c = parse(
            r#"{"campaignId": "order-shipped-2026-11-28", "appId": "wx1234567890abcdef", "kind": "subscribe",
             "templateId": "TPL_ORDER_SHIPPED", "page": "pages/order/detail?id=1",
             "data": {"thing1": {"value": "Your order shipped"}, "character_string2": {"value": "SF1234567"}},
             "miniprogramState": "formal", "lang": "zh_CN", "audience": {"openIds": ["oLvT05Abc"]}}"#,
        )
        .unwrap();
        assert_eq!(c.app_id.as_ref().unwrap().as_str(), "wx1234567890abcdef");
        assert_eq!(c.template_id, "TPL_ORDER_SHIPPED");
        assert_eq!(
            c.audience,
            Audience::OpenIds(vec![OpenId::new("oLvT05Abc").unwrap()])
        );
        let CampaignKind::Subscribe {
            data,
            miniprogram_state,
            lang,
        } = &c.kind
        else {
            panic!("not subscribe: {:?}", c.kind);
        };
        assert_eq!(
            Value::Object(data.clone()),
            json!({"thing1": {"value": "Your order shipped"},
                   "character_string2": {"value": "SF1234567"}})
        );
        assert_eq!(miniprogram_state.as_deref(), Some("formal"));
        assert_eq!(lang.as_deref(), Some("zh_CN"));
        assert_eq!(c.kind.name(), "subscribe");
        // The job carries the kind, the values and the subscribe options, and round-trips.
        let job = c.job_for(&OpenId::new("oLvT05Abc").unwrap()).unwrap();
        assert_eq!(job.kind, JobKind::Subscribe);
        assert_eq!(job.data["character_string2"].value, "SF1234567");
        assert_eq!(job.miniprogram_state.as_deref(), Some("formal"));
        assert_eq!(job.lang.as_deref(), Some("zh_CN"));
        assert_eq!(crate::job::parse_job(&job.to_json()).unwrap().job, job);
    }

    #[test]
    fn section_7_example_as_written_is_refused_for_its_thing1() {
        let err = parse(
            r#"{"campaignId": "order-shipped-2026-11-28", "appId": "wx1234567890abcdef", "kind": "subscribe",
             "templateId": "TPL_ORDER_SHIPPED", "page": "pages/order/detail?id=1",
             "data": {"thing1": {"value": "Your order has shipped"}, "character_string2": {"value": "SF1234567"}},
             "miniprogramState": "formal", "lang": "zh_CN", "audience": {"openIds": ["oLvT05Abc"]}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_data");
        assert_eq!(
            err.to_string(),
            "template data is invalid: thing1 is 22 characters, over the limit of 20 for thing"
        );
    }

    /// A subscribe campaign to everyone with this `data`.
    fn subscribe_with(data: Value) -> Result<Campaign, CampaignError> {
        let body = json!({"campaignId": "c", "templateId": "T", "kind": "subscribe",
                          "audience": {"all": true}, "data": data});
        parse(&body.to_string())
    }

    /// `Ok` or the code and reason of a subscribe campaign with one field `key` = `value`.
    fn one_field(key: &str, value: &str) -> Result<(), (&'static str, String)> {
        subscribe_with(json!({key: {"value": value}}))
            .map(|_| ())
            .map_err(|e| (e.code(), e.to_string()))
    }

    #[test]
    fn subscribe_data_keeps_wechats_limit_for_each_type() {
        let n = |c: &str, k: usize| c.repeat(k);
        // (key, at the limit, one over, a wrong character or form)
        let cases: [(&str, String, String, &str); 12] = [
            ("thing1", n("a", 20), n("a", 21), ""),
            ("number2", n("1", 32), n("1", 33), "12a"),
            ("letter3", n("x", 32), n("x", 33), "abc1"),
            ("symbol4", n("%", 5), n("%", 6), "%a"),
            ("character_string5", n("Z", 32), n("Z", 33), "SF中"),
            ("phrase6", n("配", 5), n("配", 6), "ok"),
            ("name7", n("张", 10), n("张", 11), "R2D2"),
            ("name8", n("a", 20), n("a", 21), "张3"),
            ("phone_number9", n("1", 17), n("1", 18), "call"),
            (
                "car_number10",
                "粤A8Z888挂".into(),
                "粤A8Z8888挂".into(),
                "A1中2",
            ),
            (
                "amount11",
                format!("¥{}", n("9", 10)),
                format!("¥{}", n("9", 11)),
                "¥¥1",
            ),
            (
                "time12",
                "2019年10月1日 15:01".into(),
                "24:00".into(),
                "noon",
            ),
        ];
        for (key, at_limit, over, wrong) in &cases {
            assert_eq!(one_field(key, at_limit), Ok(()), "{key} at the limit");
            for bad in [over.as_str(), wrong, ""] {
                let (code, reason) = one_field(key, bad).unwrap_err();
                assert_eq!(code, "invalid_data", "{key} = {bad:?}");
                assert!(reason.contains(key), "{key}: {reason}");
            }
        }
        // Chinese characters count one each, not three bytes.
        assert_eq!(one_field("thing1", &n("配", 20)), Ok(()));
        let (_, reason) = one_field("thing1", &n("配", 21)).unwrap_err();
        assert!(
            reason.ends_with("thing1 is 21 characters, over the limit of 20 for thing"),
            "{reason}"
        );
        // Dates, enums; a number given as a JSON number.
        assert_eq!(one_field("date1", "2019年10月1日"), Ok(()));
        assert!(one_field("date1", "15:01").is_err());
        assert_eq!(one_field("enum1", "A"), Ok(()));
        assert!(subscribe_with(json!({"number1": {"value": 42}})).is_ok());
        // An untyped key (a template keyword, a ".DATA" left in) is refused.
        let (code, reason) = one_field("keyword1", "x").unwrap_err();
        assert_eq!(code, "invalid_data");
        assert!(
            reason.contains("keyword1") && reason.contains("47003"),
            "{reason}"
        );
        assert!(one_field("thing1.DATA", "x").is_err());
        // The first bad field (in key order) is the one named.
        let err = subscribe_with(json!({"thing2": "ok", "phrase3": "not chinese", "thing9": "ok"}))
            .unwrap_err();
        assert!(
            err.to_string().contains("phrase3 has 'n' at character 1"),
            "{err}"
        );
    }

    #[test]
    fn template_campaigns_are_not_held_to_subscribe_limits() {
        let long = "x".repeat(200);
        let body = json!({"campaignId": "c", "templateId": "T", "audience": {"all": true},
                          "data": {"thing1": long, "keyword2": "", "phrase3": "not chinese"}});
        let c = parse(&body.to_string()).unwrap();
        assert_eq!(template_data_of(&c)["thing1"].value, long);
        let body = json!({"campaignId": "c", "templateId": "T", "audience": {"all": true},
                          "keywords": [long]});
        assert!(parse(&body.to_string()).is_ok());
    }

    #[test]
    fn keywords_array_and_comma_string_map_to_keyword1_to_n_in_order() {
        let base = r#""campaignId":"c","templateId":"T","audience":{"all":true}"#;
        let expected = keywords(&[("keyword1", "a"), ("keyword2", "b"), ("keyword3", "c")]);
        let from_array = parse(&format!(r#"{{{base},"keywords":["a","b","c"]}}"#)).unwrap();
        let from_string = parse(&format!(r#"{{{base},"keywords":"a,b,c"}}"#)).unwrap();
        assert_eq!(template_data_of(&from_array), &expected);
        assert_eq!(template_data_of(&from_string), &expected);

        // Ten or more keep their order by number, not by string sorting of the values.
        let many: Vec<String> = (1..=11).map(|i| format!("v{i}")).collect();
        let c = parse(&format!(r#"{{{base},"keywords":"{}"}}"#, many.join(","))).unwrap();
        let data = template_data_of(&c);
        assert_eq!(data.len(), 11);
        for i in 1..=11 {
            assert_eq!(data[&format!("keyword{i}")].value, format!("v{i}"));
        }

        // Nothing is trimmed; empty pieces are kept; the empty string is no keywords.
        let c = parse(&format!(r#"{{{base},"keywords":"a, b,,c "}}"#)).unwrap();
        assert_eq!(
            template_data_of(&c),
            &keywords(&[
                ("keyword1", "a"),
                ("keyword2", " b"),
                ("keyword3", ""),
                ("keyword4", "c ")
            ])
        );
        let c = parse(&format!(r#"{{{base},"keywords":""}}"#)).unwrap();
        assert!(template_data_of(&c).is_empty());
        let c = parse(&format!(r#"{{{base},"keywords":[]}}"#)).unwrap();
        assert!(template_data_of(&c).is_empty());
    }

    #[test]
    fn neither_keywords_nor_data_is_empty_template_data() {
        let c =
            parse(r#"{"campaignId":"c","templateId":"T","audience":{"all":true},"keywords":null}"#)
                .unwrap();
        assert!(template_data_of(&c).is_empty());
        assert_eq!(c.kind.name(), "template");
    }

    #[test]
    fn template_data_is_passed_through_normalized() {
        let c = parse(
            r#"{"campaignId":"c","templateId":"T","kind":"template","audience":{"all":true},
                "data":{"keyword1":{"value":"Shipped"},"keyword2":"SF1234","amount_3":{"value":""}},
                "miniprogramState":"ignored for template","lang":7}"#,
        )
        .unwrap();
        assert_eq!(
            template_data_of(&c),
            &keywords(&[
                ("keyword1", "Shipped"),
                ("keyword2", "SF1234"),
                ("amount_3", "")
            ])
        );
    }

    #[test]
    fn template_data_passes_color_and_unknown_fields_through_untouched() {
        // The issue's campaign, dead-lettered as invalid_data before: color was a documented
        // field of WeChat's template data, and contract section 5 passes data through.
        let c = parse(
            r##"{"campaignId":"c","templateId":"T","audience":{"all":true},
                "data":{"keyword1":{"value":"Weekly report","color":"#173177"},
                        "keyword2":{"value":"3 new badges"},
                        "keyword3":{"value":"x","futureField":{"nested":[1,2]},"bold":true}}}"##,
        )
        .unwrap();
        let data = template_data_of(&c);
        assert_eq!(
            data["keyword1"].to_wechat(),
            json!({"value": "Weekly report", "color": "#173177"})
        );
        assert_eq!(data["keyword2"], DataItem::text("3 new badges"));
        assert_eq!(
            data["keyword3"].to_wechat(),
            json!({"value": "x", "futureField": {"nested": [1, 2]}, "bold": true})
        );
        // Into every recipient's job as given, and back out of it.
        let job = c.job_for(&OpenId::new("oUser").unwrap()).unwrap();
        let again = crate::job::parse_job(&job.to_json()).unwrap();
        assert_eq!(&again.job.data, data);
        // What protects the fleet still holds: a string value in an object, and the bound,
        // which the other fields count towards.
        for bad in [
            json!({"keyword1": {"color": "#173177"}}),
            json!({"keyword1": {"value": 7, "color": "#173177"}}),
            json!({"keyword1": ["v"]}),
        ] {
            let body = json!({"campaignId": "c", "templateId": "T", "audience": {"all": true},
                              "data": bad});
            assert_eq!(parse(&body.to_string()).unwrap_err().code(), "invalid_data");
        }
        let padded = json!({"campaignId": "c", "templateId": "T", "audience": {"all": true},
                            "data": {"keyword1": {"value": "v", "pad": "p".repeat(MAX_DATA_BYTES)}}});
        let e = parse(&padded.to_string()).unwrap_err();
        assert_eq!(e.code(), "invalid_data", "{e}");
        assert!(e.to_string().contains("over the limit"), "{e}");
    }

    #[test]
    fn subscribe_data_keeps_value_objects_and_wraps_plain_strings() {
        let c = parse(
            r#"{"campaignId":"c","templateId":"T","kind":"subscribe","audience":{"all":true},
                "data":{"thing1":{"value":"hi"},"number2":{"value":3},"thing3":"plain"}}"#,
        )
        .unwrap();
        let CampaignKind::Subscribe {
            data,
            miniprogram_state,
            lang,
        } = &c.kind
        else {
            panic!("not subscribe");
        };
        assert_eq!(
            Value::Object(data.clone()),
            json!({"thing1":{"value":"hi"},"number2":{"value":3},"thing3":{"value":"plain"}})
        );
        assert_eq!((miniprogram_state, lang), (&None, &None));
    }

    #[test]
    fn job_for_builds_a_template_send_job() {
        let c = parse(
            r#"{"campaignId":"signin-1","appId":"wxabc","templateId":"TPL","page":"p/i",
                "keywords":"x,y","emphasisKeyword":"keyword1.DATA","audience":{"openIds":["o1"]}}"#,
        )
        .unwrap();
        let user = OpenId::new("oOther").unwrap();
        let job = c.job_for(&user).unwrap();
        assert_eq!(
            job,
            SendJob {
                campaign_id: "signin-1".into(),
                app_id: Some("wxabc".into()),
                open_id: "oOther".into(),
                template_id: "TPL".into(),
                page: Some("p/i".into()),
                data: keywords(&[("keyword1", "x"), ("keyword2", "y")]),
                emphasis_keyword: Some("keyword1.DATA".into()),
                attempt: 0,
                retrying_since: None,
                kind: crate::job::JobKind::Template,
                miniprogram_state: None,
                lang: None,
                invalid: None,
                single: false,
                receipts: false,
                quiet_hours: None,
                defer_until: None,
            }
        );
        // And the sender accepts it.
        let valid = crate::job::parse_job(&job.to_json()).unwrap();
        assert_eq!(valid.job, job);
    }

    #[test]
    fn a_job_template_made_for_a_recipient_is_that_recipients_job() {
        for body in [
            r##"{"campaignId":"c1","appId":"wxabc","templateId":"TPL","page":"p/i",
                "data":{"keyword1":{"value":"x","color":"#173177"}},"audience":{"openIds":["o1"]}}"##,
            r#"{"campaignId":"c2","kind":"subscribe","templateId":"T","lang":"en_US",
                "data":{"thing1":{"value":"v"}},"audience":{"all":true}}"#,
        ] {
            let c = parse(body).unwrap();
            let template = c.job_template();
            assert_eq!(template.open_id, "");
            // Kept as JSON in the campaign record, read back by `wxpush campaign retry`.
            let kept: SendJob = serde_json::from_slice(&template.to_json()).unwrap();
            let user = OpenId::new("oUser").unwrap();
            let mut again = kept.for_recipient(&user);
            assert_eq!(again, c.job_for(&user).unwrap());
            // A template that went through a retry starts afresh for its recipient.
            again.attempt = 5;
            again.retrying_since = Some(1);
            assert_eq!(again.for_recipient(&user), c.job_for(&user).unwrap());
        }
    }

    fn recipients_of(c: &Campaign) -> &[Recipient] {
        match &c.audience {
            Audience::Recipients(r) => r,
            other => panic!("not recipients: {other:?}"),
        }
    }

    #[test]
    fn the_section_8_1_example_shortened_parses_and_each_job_carries_its_recipients_data() {
        // As written, its thing1 (23 characters) is over WeChat's 20 for a `thing` field, and
        // invalid campaign-level data stops the campaign; shortened, it is the example.
        const EXAMPLE: &str = r#"{"campaignId": "points-expiring-2026-12", "kind": "subscribe", "templateId": "TPL_POINTS",
             "data": {"thing1": {"value": "Your points expire soon"}},
             "audience": {"recipients": [
               {"openId": "oA", "data": {"number2": {"value": "120"}}, "page": "pages/points/index?u=oA"},
               {"openId": "oB", "data": {"number2": {"value": "35"}}}]},
             "part": 1, "parts": 2}"#;
        assert_eq!(parse(EXAMPLE).unwrap_err().code(), "invalid_data");
        let c = parse(&EXAMPLE.replace("Your points expire soon", "Points expire soon")).unwrap();
        assert_eq!(c.part, Some(Part { index: 1, count: 2 }));
        let r = recipients_of(&c);
        assert_eq!(r.len(), 2);
        let a = c.job_for_recipient(&r[0]);
        assert_eq!(a.kind, JobKind::Subscribe);
        assert_eq!(a.open_id, "oA");
        assert_eq!(a.page.as_deref(), Some("pages/points/index?u=oA"));
        assert_eq!(a.data["thing1"].value, "Points expire soon");
        assert_eq!(a.data["number2"].value, "120");
        let b = c.job_for_recipient(&r[1]);
        assert_eq!(b.page, None, "the campaign's page (none here)");
        assert_eq!(b.data["number2"].value, "35");
    }

    #[test]
    fn a_recipients_field_wins_and_keywords_replace_by_position() {
        let c = parse(
            r##"{"campaignId": "c", "templateId": "T", "keywords": "a,b,c", "page": "p/base",
             "audience": {"recipients": [{"openId": "o1", "keywords": ["X", "Y"]},
                                         {"openId": "o2", "data": {"keyword3": "Z", "keyword9": {"value": "N", "color": "#fff"}}},
                                         {"openId": "o3"}]}}"##,
        )
        .unwrap();
        let r = recipients_of(&c);
        let values = |j: &SendJob| -> Vec<(String, String)> {
            j.data
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect()
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let j1 = c.job_for_recipient(&r[0]);
        assert_eq!(
            values(&j1),
            pairs(&[("keyword1", "X"), ("keyword2", "Y"), ("keyword3", "c")])
        );
        assert_eq!(j1.page.as_deref(), Some("p/base"));
        let j2 = c.job_for_recipient(&r[1]);
        assert_eq!(
            values(&j2),
            pairs(&[
                ("keyword1", "a"),
                ("keyword2", "b"),
                ("keyword3", "Z"),
                ("keyword9", "N")
            ])
        );
        assert_eq!(j2.data["keyword9"].extra["color"], "#fff");
        assert_eq!(
            values(&c.job_for_recipient(&r[2])),
            pairs(&[("keyword1", "a"), ("keyword2", "b"), ("keyword3", "c")])
        );
    }

    #[test]
    fn a_recipient_with_bad_data_gets_an_invalid_job_and_nothing_else() {
        let long = "x".repeat(21);
        let body = json!({"campaignId": "c", "kind": "subscribe", "templateId": "TPL_A",
            "data": {"thing1": {"value": "ok"}},
            "audience": {"recipients": [
                {"openId": "o1", "data": {"thing1": {"value": long}}},
                {"openId": "o2", "data": 5},
                {"openId": "o3", "keywords": ["a"]},
                {"openId": "o4", "page": 7},
                {"openId": "o5", "page": "p\u{1}"},
                {"openId": "o6", "data": {"thing2": "fine"}}]}});
        let c = parse(&body.to_string()).unwrap();
        let r = recipients_of(&c);
        for bad in &r[..5] {
            let job = c.job_for_recipient(bad);
            assert_eq!(job.kind, JobKind::Invalid, "{bad:?}");
            assert!(job.data.is_empty() && job.page.is_none());
            let reason = job.invalid.expect("a reason");
            assert!(reason.len() < 200, "{reason}");
            assert!(
                !reason.contains("xxxxxxxxxxx"),
                "does not echo input: {reason}"
            );
            let round = crate::parse_job(&job_json(&c, bad)).unwrap();
            assert_eq!(round.job.kind, JobKind::Invalid);
        }
        assert_eq!(c.job_for_recipient(&r[5]).kind, JobKind::Subscribe);
    }

    fn job_json(c: &Campaign, r: &Recipient) -> Vec<u8> {
        c.job_for_recipient(r).to_json()
    }

    #[test]
    fn recipients_are_checked_like_open_ids_and_the_first_of_a_user_counts() {
        let c = parse(
            r#"{"campaignId": "c", "templateId": "T", "audience": {"recipients": [
                {"openId": "o1", "keywords": ["first"]}, "o2", {"openId": ""}, {"noOpenId": 1},
                {"openId": 5}, {"openId": "o1", "keywords": ["second"]}, null, {"openId": "o3"}]}}"#,
        )
        .unwrap();
        let ids: Vec<&str> = recipients_of(&c)
            .iter()
            .map(|r| r.open_id.as_str())
            .collect();
        assert_eq!(ids, ["o1", "o3"]);
        assert_eq!(c.rejected_recipients.len(), 5);
        let first = c.job_for_recipient(&recipients_of(&c)[0]);
        assert_eq!(first.data["keyword1"].value, "first");
        assert_eq!(
            parse(r#"{"campaignId": "c", "templateId": "T", "audience": {"recipients": [{"openId": ""}]}}"#)
                .unwrap_err()
                .code(),
            "empty_audience"
        );
        for audience in [
            r#"{"recipients": 5}"#,
            r#"{"recipients": [{"openId": "o1"}], "all": true}"#,
            r#"{"recipients": [{"openId": "o1"}], "openIds": ["o1"]}"#,
        ] {
            let body =
                format!(r#"{{"campaignId": "c", "templateId": "T", "audience": {audience}}}"#);
            assert_eq!(
                parse(&body).unwrap_err().code(),
                "invalid_audience",
                "{audience}"
            );
        }
        let many = format!(
            r#"{{"campaignId": "c", "templateId": "T", "audience": {{"recipients": [{}]}}}}"#,
            [r#"{"openId": "o"}"#; 3].join(",")
        );
        let limits = CampaignLimits {
            max_bytes: 1 << 20,
            max_recipients: 2,
        };
        assert_eq!(
            parse_campaign(many.as_bytes(), limits).unwrap_err().code(),
            "too_many_recipients"
        );
    }

    #[test]
    fn a_subscribe_campaign_needs_data_unless_its_recipients_carry_it() {
        let c = parse(
            r#"{"campaignId": "c", "kind": "subscribe", "templateId": "TPL_A",
                "audience": {"recipients": [{"openId": "o1", "data": {"thing1": "hi"}}, {"openId": "o2"}]}}"#,
        )
        .unwrap();
        let r = recipients_of(&c);
        assert_eq!(c.job_for_recipient(&r[0]).kind, JobKind::Subscribe);
        assert_eq!(
            c.job_for_recipient(&r[1]).kind,
            JobKind::Invalid,
            "no data at all"
        );
        for audience in [r#"{"openIds": ["o1"]}"#, r#"{"all": true}"#] {
            let body = format!(
                r#"{{"campaignId": "c", "kind": "subscribe", "templateId": "TPL_A", "audience": {audience}}}"#
            );
            assert_eq!(
                parse(&body).unwrap_err().code(),
                "invalid_data",
                "{audience}"
            );
        }
        // Campaign-level data still stops the whole campaign when it is bad.
        let bad = json!({"campaignId": "c", "kind": "subscribe", "templateId": "TPL_A",
            "data": {"thing1": {"value": "x".repeat(21)}},
            "audience": {"recipients": [{"openId": "o1"}]}});
        assert_eq!(parse(&bad.to_string()).unwrap_err().code(), "invalid_data");
    }

    #[test]
    fn parts_are_both_or_neither_and_in_range() {
        let with = |extra: &str| {
            parse(&format!(
                r#"{{"campaignId": "c", "templateId": "T", "audience": {{"all": true}}{extra}}}"#
            ))
        };
        assert_eq!(with("").unwrap().part, None);
        assert_eq!(
            with(r#", "part": 3, "parts": 3"#).unwrap().part,
            Some(Part { index: 3, count: 3 })
        );
        for bad in [
            r#", "part": 1"#,
            r#", "parts": 2"#,
            r#", "part": 0, "parts": 2"#,
            r#", "part": 3, "parts": 2"#,
            r#", "part": 1, "parts": 10001"#,
            r#", "part": "1", "parts": 2"#,
            r#", "part": 1.5, "parts": 2"#,
            r#", "part": -1, "parts": 2"#,
        ] {
            assert_eq!(with(bad).unwrap_err().code(), "invalid_part", "{bad}");
        }
    }

    #[test]
    fn send_at_is_whole_unix_milliseconds_within_a_year() {
        let with = |extra: &str| {
            parse(&format!(
                r#"{{"campaignId": "c", "templateId": "T", "audience": {{"all": true}}{extra}}}"#
            ))
        };
        assert_eq!(with("").unwrap().send_at_ms, None);
        assert_eq!(with(r#", "sendAt": null"#).unwrap().send_at_ms, None);
        let c = with(r#", "sendAt": 1764950400000"#).unwrap();
        assert_eq!(c.send_at_ms, Some(1_764_950_400_000));
        for bad in [
            r#", "sendAt": "1764950400000""#,
            r#", "sendAt": 1764950400000.5"#,
            r#", "sendAt": 1.7649504e12"#,
            r#", "sendAt": -1"#,
            r#", "sendAt": 1764950400"#,
            r#", "sendAt": 0"#,
            r#", "sendAt": true"#,
            r#", "sendAt": {}"#,
            r#", "sendAt": 253402300800000"#,
            r#", "sendAt": 18446744073709551615"#,
            r#", "sendAt": 1e300"#,
        ] {
            assert_eq!(with(bad).unwrap_err().code(), "invalid_send_at", "{bad}");
        }
        // Within a year of the clock, not further.
        let now = 1_764_950_400_000;
        let year = MAX_SEND_AHEAD.as_millis() as i64;
        let at = |t: i64| with(&format!(r#", "sendAt": {t}"#)).unwrap();
        assert!(at(now + year).check_send_at(now).is_ok());
        assert!(at(now - 1000).check_send_at(now).is_ok(), "past: at once");
        let far = at(now + year + 1).check_send_at(now).unwrap_err();
        assert_eq!(far.code(), "invalid_send_at");
        assert!(far.to_string().contains("366 days"), "{far}");
        assert!(with("").unwrap().check_send_at(now).is_ok());
    }

    #[test]
    fn bad_recipients_are_counted_not_fatal_and_duplicates_removed() {
        let c = parse(
            r#"{"campaignId":"c","templateId":"T","audience":{"openIds":
                ["o1", "", "o2", "has space", 5, "o1", null, "o3", "o2", "中文"]}}"#,
        )
        .unwrap();
        let ids: Vec<&str> = match &c.audience {
            Audience::OpenIds(ids) => ids.iter().map(OpenId::as_str).collect(),
            _ => panic!("not a list"),
        };
        assert_eq!(ids, ["o1", "o2", "o3"]);
        let indexes: Vec<usize> = c
            .rejected_recipients
            .first
            .iter()
            .map(|r| r.index)
            .collect();
        assert_eq!(indexes, [1, 3, 4, 6, 9]);
        assert!(c.rejected_recipients.first[0].reason.contains("empty"));
        assert_eq!(c.rejected_recipients.first[2].reason, "not a string");
    }

    #[test]
    fn bad_campaigns_say_why() {
        let cases: &[(&str, &str)] = &[
            ("[1,2]", "not_object"),
            ("\"str\"", "not_object"),
            ("{not json", "not_json"),
            ("", "not_json"),
            (
                r#"{"templateId":"T","audience":{"all":true}}"#,
                "missing_campaign_id",
            ),
            (
                r#"{"campaignId":null,"templateId":"T","audience":{"all":true}}"#,
                "missing_campaign_id",
            ),
            (
                r#"{"campaignId":"a b","templateId":"T","audience":{"all":true}}"#,
                "invalid_campaign_id",
            ),
            (
                r#"{"campaignId":"","templateId":"T","audience":{"all":true}}"#,
                "invalid_campaign_id",
            ),
            (
                r#"{"campaignId":7,"templateId":"T","audience":{"all":true}}"#,
                "invalid_campaign_id",
            ),
            (
                r#"{"campaignId":"c","audience":{"all":true}}"#,
                "missing_template_id",
            ),
            (
                r#"{"campaignId":"c","templateId":" ","audience":{"all":true}}"#,
                "invalid_template_id",
            ),
            (
                r#"{"campaignId":"c","templateId":3,"audience":{"all":true}}"#,
                "invalid_template_id",
            ),
            (
                r#"{"campaignId":"c","templateId":"T\n","audience":{"all":true}}"#,
                "invalid_template_id",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","page":5,"audience":{"all":true}}"#,
                "invalid_page",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","page":"","audience":{"all":true}}"#,
                "invalid_page",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","emphasisKeyword":[],"audience":{"all":true}}"#,
                "invalid_emphasis_keyword",
            ),
            (
                r#"{"campaignId":"c","appId":"wx:1","templateId":"T","audience":{"all":true}}"#,
                "invalid_app_id",
            ),
            (
                r#"{"campaignId":"c","appId":1,"templateId":"T","audience":{"all":true}}"#,
                "invalid_app_id",
            ),
            (
                r#"{"campaignId":"c","kind":"sms","templateId":"T","audience":{"all":true}}"#,
                "invalid_kind",
            ),
            (
                r#"{"campaignId":"c","kind":true,"templateId":"T","audience":{"all":true}}"#,
                "invalid_kind",
            ),
            (
                r#"{"campaignId":"c","kind":"subscribe","templateId":"T","data":{"thing1":"b"},"miniprogramState":"prod","audience":{"all":true}}"#,
                "invalid_miniprogram_state",
            ),
            (
                r#"{"campaignId":"c","kind":"subscribe","templateId":"T","data":{"thing1":"b"},"lang":"fr_FR","audience":{"all":true}}"#,
                "invalid_lang",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","keywords":5,"audience":{"all":true}}"#,
                "invalid_keywords",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","keywords":["a",1],"audience":{"all":true}}"#,
                "invalid_keywords",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","keywords":["a"],"data":{},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","data":[],"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","data":{"k":1},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","data":{"k":{"value":1}},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","data":{"k":{"color":"red"}},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","data":{"":"v"},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","kind":"subscribe","templateId":"T","keywords":["a"],"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","kind":"subscribe","templateId":"T","audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","kind":"subscribe","templateId":"T","data":{},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (
                r#"{"campaignId":"c","kind":"subscribe","templateId":"T","data":{"t":{"v":"x"}},"audience":{"all":true}}"#,
                "invalid_data",
            ),
            (r#"{"campaignId":"c","templateId":"T"}"#, "missing_audience"),
            (
                r#"{"campaignId":"c","templateId":"T","audience":null}"#,
                "missing_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":"all"}"#,
                "invalid_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{}}"#,
                "invalid_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{"all":false}}"#,
                "invalid_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{"all":"yes"}}"#,
                "invalid_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{"all":true,"openIds":["o"]}}"#,
                "invalid_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{"openIds":"o1,o2"}}"#,
                "invalid_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{"openIds":[]}}"#,
                "empty_audience",
            ),
            (
                r#"{"campaignId":"c","templateId":"T","audience":{"openIds":["a b", 3]}}"#,
                "empty_audience",
            ),
        ];
        for (body, code) in cases {
            let err = parse(body).unwrap_err();
            assert_eq!(err.code(), *code, "{body}: {err}");
        }

        let err = parse_campaign(b"\xff\xfe", CampaignLimits::default()).unwrap_err();
        assert_eq!(err.code(), "not_utf8");

        let long = |key: &str, len: usize| {
            json!({"campaignId": "c", "templateId": "T", "audience": {"all": true}, key: "x".repeat(len)})
                .to_string()
        };
        assert!(parse(&long("page", MAX_PAGE_BYTES)).is_ok());
        assert_eq!(
            parse(&long("page", MAX_PAGE_BYTES + 1)).unwrap_err().code(),
            "invalid_page"
        );
        assert!(parse(&long("templateId", MAX_TEMPLATE_ID_BYTES)).is_ok());
        assert_eq!(
            parse(&long("templateId", MAX_TEMPLATE_ID_BYTES + 1))
                .unwrap_err()
                .code(),
            "invalid_template_id"
        );
        assert_eq!(
            parse(&long("campaignId", 129)).unwrap_err().code(),
            "invalid_campaign_id"
        );

        let small = CampaignLimits {
            max_bytes: 99,
            max_recipients: 2,
        };
        let err = parse_campaign(&[b' '; 100], small).unwrap_err();
        assert_eq!(err.code(), "too_large");
        let body = br#"{"campaignId":"c","templateId":"T","audience":{"openIds":["a","b","c"]}}"#;
        let err = parse_campaign(
            body,
            CampaignLimits {
                max_bytes: 1 << 20,
                ..small
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "too_many_recipients");
        let body = br#"{"campaignId":"c","templateId":"T","audience":{"openIds":["a","b"]}}"#;
        assert!(parse_campaign(
            body,
            CampaignLimits {
                max_bytes: 1 << 20,
                ..small
            }
        )
        .is_ok());
    }

    #[test]
    fn a_list_of_a_million_bad_entries_costs_what_ten_do() {
        let mut list = vec![json!(1); 500_000];
        list[7] = json!("oGood");
        list[9] = json!("oGood");
        list[11] = json!("bad id");
        let body = json!({"campaignId": "c", "templateId": "T", "audience": {"openIds": list}});
        let c = parse(&body.to_string()).unwrap();
        assert_eq!(
            c.audience,
            Audience::OpenIds(vec![OpenId::new("oGood").unwrap()])
        );
        let r = &c.rejected_recipients;
        assert_eq!(r.len(), 500_000 - 2);
        assert_eq!(r.first.len(), RejectedRecipients::KEPT);
        let indexes: Vec<usize> = r.first.iter().map(|x| x.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3, 4, 5, 6, 8, 10, 11]);
        assert!(!r.first[9].reason.contains("bad id"), "never quoted");
        // Unknown fields and unknown audience keys are skipped unread, whatever they hold.
        let junk = json!({"campaignId": "c", "templateId": "T", "junk": vec![[1]; 1000],
                          "audience": {"openIds": ["oA"], "note": {"x": vec![2; 1000]}}});
        assert!(parse(&junk.to_string()).is_ok());
    }

    #[test]
    fn deep_json_is_refused_not_a_crash() {
        for deep in ["[".repeat(100_000), "{\"a\":".repeat(100_000)] {
            let err = parse(&deep).unwrap_err();
            assert_eq!(err.code(), "not_json");
        }
        let nested_audience = format!(
            r#"{{"campaignId":"c","templateId":"T","audience":{}}}"#,
            "[".repeat(500)
        );
        assert_eq!(parse(&nested_audience).unwrap_err().code(), "not_json");
    }

    #[test]
    fn error_messages_do_not_echo_long_input() {
        let junk = "z".repeat(5000);
        let body = json!({"campaignId": "c", "templateId": "T", "kind": junk,
                          "audience": {"all": true}})
        .to_string();
        assert!(parse(&body).unwrap_err().to_string().len() < 200);
        let body = json!({"campaignId": "c", "templateId": "T", "data": {junk.clone(): 1},
                          "audience": {"all": true}})
        .to_string();
        assert!(parse(&body).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn template_data_is_bounded_because_every_job_carries_it() {
        let with = |extra: Value| {
            let mut c = json!({"campaignId": "c", "templateId": "T", "audience": {"all": true}});
            if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
                c.extend(extra);
            }
            parse(&c.to_string())
        };
        let code = |extra: Value| with(extra).map(|_| ()).map_err(|e| e.code());
        let n = MAX_DATA_FIELDS;
        // Fields: at the limit, and one more, in each of the three ways to give them.
        assert!(code(json!({"keywords": ",".repeat(n - 1)})).is_ok());
        assert_eq!(
            code(json!({"keywords": ",".repeat(n)})),
            Err("invalid_keywords")
        );
        assert!(code(json!({"keywords": vec!["k"; n]})).is_ok());
        assert_eq!(
            code(json!({"keywords": vec!["k"; n + 1]})),
            Err("invalid_keywords")
        );
        let fields = |count: usize| -> Map<String, Value> {
            (0..count)
                .map(|i| (format!("keyword{i}"), json!("v")))
                .collect()
        };
        assert!(code(json!({"data": fields(n)})).is_ok());
        assert_eq!(code(json!({"data": fields(n + 1)})), Err("invalid_data"));
        assert_eq!(
            code(json!({"kind": "subscribe", "data": fields(n + 1)})),
            Err("invalid_data")
        );
        // Bytes: names and values together.
        let room = MAX_DATA_BYTES - "keyword1".len();
        assert!(code(json!({"keywords": ["x".repeat(room)]})).is_ok());
        assert_eq!(
            code(json!({"keywords": ["x".repeat(room + 1)]})),
            Err("invalid_keywords")
        );
        assert_eq!(
            code(json!({"keywords": "x".repeat(room + 1)})),
            Err("invalid_keywords")
        );
        assert!(code(json!({"data": {"keyword1": "x".repeat(room)}})).is_ok());
        assert_eq!(
            code(json!({"data": {"keyword1": {"value": "x".repeat(room + 1)}}})),
            Err("invalid_data")
        );
        // A subscribe field may carry more than "value": all of it is measured.
        let padded = json!({"thing1": {"value": "v", "pad": "x".repeat(MAX_DATA_BYTES)}});
        assert_eq!(
            code(json!({"kind": "subscribe", "data": padded})),
            Err("invalid_data")
        );
        // The attack this stops: 1 MiB of commas was a million keywords in every job.
        let body = json!({"campaignId": "c", "templateId": "T", "audience": {"all": true},
                          "keywords": ",".repeat(1024 * 1024 - 100)})
        .to_string();
        let err = parse(&body).unwrap_err();
        assert_eq!(err.code(), "invalid_keywords");
        assert!(err.to_string().len() < 100, "{err}");
        // Whatever passes, one job stays small.
        let c = with(json!({"keywords": vec!["x".repeat(room / n - 9); n]})).unwrap();
        let job = c.job_for(&OpenId::new("oUser").unwrap()).unwrap().to_json();
        assert!(job.len() < MAX_DATA_BYTES + 4096, "{}", job.len());
    }

    #[test]
    fn every_hostile_campaign_id_and_recipient_gets_its_code() {
        use crate::names::hostile::{self, Verdict};
        for (id, verdict) in hostile::ids() {
            let body = json!({"campaignId": id, "templateId": "T", "audience": {"all": true}});
            match (verdict, parse(&body.to_string())) {
                (Verdict::Accepted, Ok(c)) => assert_eq!(c.campaign_id, id),
                (Verdict::Accepted, Err(e)) => panic!("{id:?} refused: {e}"),
                (_, got) => assert_eq!(
                    got.map(|_| ()).unwrap_err().code(),
                    "invalid_campaign_id",
                    "{id:?}"
                ),
            }
            // As a recipient: refused ones are counted, never fatal beside a good one.
            let body = json!({"campaignId": "c", "templateId": "T",
                              "audience": {"openIds": [id, "oGood"]}});
            let c = parse(&body.to_string()).unwrap();
            let Audience::OpenIds(ids) = &c.audience else {
                panic!("an explicit audience")
            };
            let listed = ids.iter().any(|o| o.as_str() == id);
            assert_eq!(listed, verdict == Verdict::Accepted, "{id:?}");
            assert_eq!(c.rejected_recipients.len(), usize::from(!listed), "{id:?}");
            // Alone, a refused recipient leaves the audience empty.
            let body = json!({"campaignId": "c", "templateId": "T",
                              "audience": {"openIds": [id]}});
            let got = parse(&body.to_string()).map(|_| ()).map_err(|e| e.code());
            let want = if listed {
                Ok(())
            } else {
                Err("empty_audience")
            };
            assert_eq!(got, want, "{id:?}");
        }
    }

    /// What every accepted campaign guarantees, whatever the input.
    fn check_accepted(c: &Campaign) -> Result<(), proptest::test_runner::TestCaseError> {
        proptest::prop_assert!(check_campaign_id(&c.campaign_id).is_ok());
        proptest::prop_assert!(check_text(&c.template_id, MAX_TEMPLATE_ID_BYTES, false).is_ok());
        if let Audience::OpenIds(ids) = &c.audience {
            proptest::prop_assert!(!ids.is_empty());
        }
        if let CampaignKind::Subscribe { data, .. } = &c.kind {
            proptest::prop_assert!(validate_subscribe_data(data).is_ok());
        }
        if let CampaignKind::Template { data } = &c.kind {
            proptest::prop_assert!(data.len() <= MAX_DATA_FIELDS);
            proptest::prop_assert!(data_bytes(data) <= MAX_DATA_BYTES);
            let job = c.job_for(&OpenId::new("oUser").unwrap());
            let job = job.map(|j| crate::job::parse_job(&j.to_json()));
            proptest::prop_assert!(matches!(job, Some(Ok(_))), "{:?}", job);
        }
        Ok(())
    }

    /// Fragments of campaign messages, right and wrong, to assemble at random.
    const FRAGMENTS: &[&str] = &[
        r#""campaignId":"c1""#,
        r#""campaignId":"a b""#,
        r#""campaignId":null"#,
        r#""templateId":"T""#,
        r#""templateId":"""#,
        r#""page":"p""#,
        r#""page":{}"#,
        r#""emphasisKeyword":"keyword1.DATA""#,
        r#""appId":"wx1""#,
        r#""appId":"wx:1""#,
        r#""kind":"subscribe""#,
        r#""kind":"template""#,
        r#""kind":1"#,
        r#""miniprogramState":"formal""#,
        r#""miniprogramState":"x""#,
        r#""lang":"en_US""#,
        r#""keywords":"a,b""#,
        r#""keywords":["a",2]"#,
        r#""keywords":[]"#,
        r#""data":{"k":"v"}"#,
        r#""data":{"k":{"value":"v"}}"#,
        r#""data":{"k":{"value":[]}}"#,
        r#""data":"x""#,
        r#""audience":{"all":true}"#,
        r#""audience":{"all":false}"#,
        r#""audience":{"openIds":["o1","o1","",7]}"#,
        r#""audience":{"openIds":[]}"#,
        r#""audience":[]"#,
        r#""extra":{"deep":[[[1]]]}"#,
    ];

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_campaign(&body, CampaignLimits::default());
        }

        #[test]
        fn never_panics_on_any_string(body in proptest::prelude::any::<String>()) {
            if let Ok(c) = parse(&body) {
                check_accepted(&c)?;
            }
        }

        #[test]
        fn any_strings_in_every_field_parse_or_say_why(
            campaign_id in proptest::prelude::any::<String>(),
            template_id in proptest::prelude::any::<String>(),
            keyword in proptest::prelude::any::<String>(),
            recipient in proptest::prelude::any::<String>(),
            page in proptest::option::of(proptest::prelude::any::<String>()),
        ) {
            let mut body = json!({"campaignId": campaign_id, "templateId": template_id,
                                  "keywords": keyword, "audience": {"openIds": [recipient]}});
            if let Some(page) = page {
                body["page"] = Value::String(page);
            }
            match parse(&body.to_string()) {
                Ok(c) => {
                    check_accepted(&c)?;
                    proptest::prop_assert_eq!(&c.campaign_id, &campaign_id);
                }
                Err(e) => {
                    if check_campaign_id(&campaign_id).is_err() {
                        proptest::prop_assert_eq!(e.code(), "invalid_campaign_id");
                    }
                }
            }
        }

        #[test]
        fn generated_json_parses_or_says_why(
            value in crate::upload::tests::json_value(),
            place in 0usize..6,
        ) {
            let mut body = json!({"campaignId": "c", "templateId": "T",
                                  "audience": {"all": true}});
            match place {
                0 => body = value,
                1 => body["audience"] = value,
                2 => body["audience"] = json!({"openIds": value}),
                3 => body["keywords"] = value,
                4 => body["data"] = value,
                _ => {
                    body["kind"] = json!("subscribe");
                    body["data"] = value;
                }
            }
            match parse(&body.to_string()) {
                Ok(c) => check_accepted(&c)?,
                Err(e) => proptest::prop_assert!(!e.code().is_empty()),
            }
        }

        #[test]
        fn nesting_of_any_depth_is_refused_or_parsed_never_a_crash(
            depth in 0usize..400,
            object in proptest::prelude::any::<bool>(),
            place in 0usize..3,
        ) {
            let deep = crate::upload::tests::nested(depth, object, "1");
            let (body, levels) = match place {
                0 => (deep, depth),
                1 => (format!(r#"{{"campaignId":"c","templateId":"T","audience":{deep}}}"#), depth + 1),
                _ => (format!(r#"{{"campaignId":"c","templateId":"T","audience":{{"all":true}},"data":{deep}}}"#), depth + 1),
            };
            let got = parse(&body);
            if levels >= 130 {
                proptest::prop_assert_eq!(got.unwrap_err().code(), "not_json");
            } else if levels <= 120 {
                proptest::prop_assert!(got.err().is_none_or(|e| e.code() != "not_json"));
            }
        }

        #[test]
        fn subscribe_data_of_any_strings_parses_or_is_invalid_data(
            kind in proptest::sample::select(
                crate::subscribe_data::VALUE_TYPES.iter().map(|t| t.name).chain(["keyword"]).collect::<Vec<_>>()
            ),
            number in 0u32..30,
            value in proptest::prelude::any::<String>(),
        ) {
            let key = format!("{kind}{number}");
            match subscribe_with(json!({key.clone(): {"value": value}})) {
                Ok(c) => check_accepted(&c)?,
                Err(e) => {
                    proptest::prop_assert_eq!(e.code(), "invalid_data");
                    proptest::prop_assert!(e.to_string().contains(&key), "{}", e);
                }
            }
        }

        #[test]
        fn never_panics_on_json_ish_strings(body in r#"[{}\[\]":,a-zA-Z0-9 .\\-]{0,300}"#) {
            let _ = parse_campaign(body.as_bytes(), CampaignLimits::default());
        }

        #[test]
        fn assembled_messages_parse_or_say_why(
            picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..12)
        ) {
            let body = format!(
                "{{{}}}",
                picks.iter().map(|&i| FRAGMENTS[i]).collect::<Vec<_>>().join(",")
            );
            match parse_campaign(body.as_bytes(), CampaignLimits::default()) {
                Ok(c) => {
                    proptest::prop_assert!(crate::job::check_campaign_id(&c.campaign_id).is_ok());
                    if let Audience::OpenIds(ids) = &c.audience {
                        proptest::prop_assert!(!ids.is_empty());
                        let unique: HashSet<&OpenId> = ids.iter().collect();
                        proptest::prop_assert_eq!(unique.len(), ids.len());
                    }
                    let user = OpenId::new("oUser").unwrap();
                    match (&c.kind, c.job_for(&user)) {
                        (CampaignKind::Template { .. }, Some(job)) => {
                            proptest::prop_assert!(crate::job::parse_job(&job.to_json()).is_ok());
                        }
                        (CampaignKind::Subscribe { .. }, None) => {}
                        (kind, job) => proptest::prop_assert!(false, "{kind:?} gave {job:?}"),
                    }
                }
                Err(e) => proptest::prop_assert!(!e.code().is_empty()),
            }
        }
    }

    #[test]
    fn quiet_hours_is_read_into_every_job_and_checked() {
        let with = |q: &str| {
            parse(&format!(
                r#"{{"campaignId":"q1","templateId":"TPL","keywords":"x",{q}"audience":{{"openIds":["o1"]}}}}"#
            ))
        };
        let user = OpenId::new("o1").unwrap();
        assert_eq!(with("").unwrap().job_for(&user).unwrap().quiet_hours, None);
        for (given, mode) in [
            ("defer", QuietMode::Defer),
            ("skip", QuietMode::Skip),
            ("ignore", QuietMode::Ignore),
        ] {
            let c = with(&format!(r#""quietHours":"{given}","#)).unwrap();
            assert_eq!(c.quiet_hours, Some(mode));
            assert_eq!(c.job_for(&user).unwrap().quiet_mode(), mode);
        }
        for bad in [r#""later""#, "true", r#""Skip""#] {
            let e = with(&format!(r#""quietHours":{bad},"#)).unwrap_err();
            assert_eq!(e.code(), "invalid_quiet_hours");
            assert_eq!(
                e.to_string(),
                r#"quietHours is invalid: not one of "defer", "skip", "ignore""#
            );
        }
    }
}
