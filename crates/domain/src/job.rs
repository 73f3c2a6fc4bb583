//! The send job: one message to one user, as the dispatcher publishes it and the senders
//! consume it (queue `<ns>.send`).
//!
//! ```json
//! {"campaignId": "signin-2026-11-28", "openId": "oLvT05Abc", "templateId": "TPL_SIGNIN",
//!  "page": "pages/signin/index", "data": {"keyword1": "Daily check-in"},
//!  "emphasisKeyword": "keyword1.DATA", "attempt": 0}
//! ```
//!
//! A `data` field is a string (the value) or, when the campaign gave more than a value for it
//! (`color`, or any other field WeChat may read), the object as the campaign gave it, with its
//! string `value` ([`DataItem`]); the sender sends each as `{"value": ..., ...}`.
//!
//! A subscribe-message job adds `"kind": "subscribe"` and may carry `miniprogramState` and
//! `lang`; its `data` is field → value like a template job's (the sender wraps each value as
//! `{"value": ...}` for WeChat). `kind` absent means `template`, so jobs published before
//! subscribe messages existed still parse.
//!
//! A recipient of a personalised campaign (contract 8.1) whose own data the dispatcher refused
//! gets a job of `"kind": "invalid"` with the reason in `invalid` and no data: the sender
//! records `invalid_data` for them through the same marks as every outcome.
//!
//! `quietHours` (`defer`, `skip`, `ignore`; contract 8.5) is the campaign's or message's own
//! choice, absent when it made none (then the default applies: [`SendJob::quiet_mode`]), and
//! `deferUntil` (Unix ms) is set by a sender that held the job for its app's quiet hours.
//! Jobs without them (published before quiet hours existed) parse as before.
//!
//! `appId` is optional (the install's app when absent); `attempt` (retries so far) is set by
//! the senders when they re-publish a job for a later retry. The credential an attempt holds
//! is kept in the bank's campaign marks, not in the job. This module owns the format and its
//! validation; it must do no I/O, and [`parse_job`] must never panic on any input.
//!
//! The queue is fed by the dispatcher and the senders, but anything can be published to it, so
//! a job is validated like outside input: the campaign id and openId (parts of Redis keys) by
//! the name rules ([`crate::names`], [`check_campaign_id`]), and `attempt` is bounded by
//! [`MAX_JOB_ATTEMPT`] so that counting one more attempt can never overflow.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::names::{AppId, NameError, OpenId};
use crate::quiet::QuietMode;

/// Longest accepted campaign id.
pub const MAX_CAMPAIGN_ID_BYTES: usize = 128;

/// Largest job accepted, in bytes. A campaign's job carries at most 32 KiB of template data
/// (its field names, values and other fields), which JSON escaping can make up to six times
/// longer, beside a page and names of a few hundred bytes each: no job the dispatcher makes
/// is near this. A larger one was not made by a dispatcher and is refused before it is parsed,
/// so what a sender holds is bounded by its prefetch times this.
pub const MAX_JOB_BYTES: usize = 256 * 1024;

/// Largest `attempt` a job may carry. Senders give up after `WXPUSH_SEND_MAX_ATTEMPTS` (8 by
/// default, each retry waiting up to 15 minutes), so a job claiming more was not written by
/// one; refusing it keeps `attempt + 1` from overflowing.
pub const MAX_JOB_ATTEMPT: u32 = 1_000_000;

/// A send job as it travels on the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendJob {
    pub campaign_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    pub open_id: String,
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// `keyword1..N` (or any template field) → its value and whatever else the campaign gave.
    #[serde(default)]
    pub data: BTreeMap<String, DataItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emphasis_keyword: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    /// When the job's first failed attempt was (Unix ms): its retries go on until
    /// `WXPUSH_SEND_RETRY_FOR` after it. Set by the senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrying_since: Option<i64>,
    /// What the job spends and which API it calls.
    #[serde(default, skip_serializing_if = "JobKind::is_template")]
    pub kind: JobKind,
    /// Subscribe jobs: `developer`, `trial` or `formal` (WeChat's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miniprogram_state: Option<String>,
    /// Subscribe jobs: `zh_CN` (WeChat's default), `en_US`, `zh_HK`, `zh_TW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// [`JobKind::Invalid`] jobs: why the recipient's data was refused (contract 8.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// A single message's job (contract 8.2): `campaignId` holds its messageId.
    #[serde(default, skip_serializing_if = "is_false")]
    pub single: bool,
    /// A receipt is published for the recipient's outcome (contract 8.3): always for a single
    /// message, for a campaign's recipients when the campaign asks (`"receipts": true`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub receipts: bool,
    /// What the job does in its app's quiet hours (contract 8.5), as the campaign or message
    /// said; absent: the default, `defer` for a campaign's job, `ignore` for a single
    /// message's ([`SendJob::quiet_mode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietMode>,
    /// Set by the senders on a job deferred for quiet hours: not sent before this (Unix ms),
    /// the window's end plus the user's share of the release spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_until: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a single message's id is prefixed with where the campaign marks and counters name it
/// ([`SendJob::mark_id`]): a character no campaign id holds (they are ASCII), so a message and a
/// campaign of the same id never share a user's mark.
pub const SINGLE_MARK: char = '\u{2709}';

/// One data field of a message: its `value`, and the other fields the campaign gave beside it
/// (`color`, or any other), passed to WeChat as they came.
///
/// On the wire a bare value is a string (`"Daily check-in"`), anything more the object
/// (`{"value": "Weekly report", "color": "#173177"}`), so a job is as small as its data allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataItem {
    pub value: String,
    /// Fields other than `value`, as given (never a `value` key).
    pub extra: Map<String, Value>,
}

impl DataItem {
    /// A field with a value and nothing else.
    pub fn text(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            extra: Map::new(),
        }
    }

    /// `{"value": ..., <extra>...}`, as WeChat takes it.
    pub fn to_wechat(&self) -> Value {
        let mut obj = Map::with_capacity(self.extra.len() + 1);
        obj.insert("value".to_owned(), Value::String(self.value.clone()));
        obj.extend(self.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Value::Object(obj)
    }

    /// The item from a campaign's or a job's JSON: a string, or an object whose `value` is a
    /// string (its other fields kept). `None` for anything else.
    pub fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(Self::text(s.clone())),
            Value::Object(o) => {
                let Some(Value::String(value)) = o.get("value") else {
                    return None;
                };
                let extra = o
                    .iter()
                    .filter(|(k, _)| *k != "value")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Some(Self {
                    value: value.clone(),
                    extra,
                })
            }
            _ => None,
        }
    }

    /// Bytes the item adds to a job: its value, and its other fields as JSON text.
    pub fn bytes(&self) -> usize {
        let extra = if self.extra.is_empty() {
            0
        } else {
            serde_json::to_string(&self.extra).map_or(usize::MAX / 2, |s| s.len())
        };
        self.value.len() + extra
    }
}

impl Serialize for DataItem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.extra.is_empty() {
            s.serialize_str(&self.value)
        } else {
            self.to_wechat().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for DataItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).ok_or_else(|| {
            serde::de::Error::custom("a data field is neither a string nor {\"value\": \"...\"}")
        })
    }
}

/// What a send job spends and which WeChat API it calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A formId or a prepayId use; `/cgi-bin/message/wxopen/template/send`.
    #[default]
    Template,
    /// One consent for the job's template; `/cgi-bin/message/subscribe/send`.
    Subscribe,
    /// A recipient of a personalised campaign whose own data the dispatcher refused
    /// (contract 8.1): the sender records `invalid_data` for them, spends nothing and calls
    /// nothing. The job carries no data, only the reason (`invalid`). A sender older than
    /// this kind refuses the job as malformed rather than sending it without its data.
    Invalid,
}

impl JobKind {
    pub fn is_template(&self) -> bool {
        *self == JobKind::Template
    }
}

/// A job that passed validation, with its names checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidJob {
    pub job: SendJob,
    pub app_id: Option<AppId>,
    pub open_id: OpenId,
}

/// Why a job cannot be processed. It goes to the dead-letter queue with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job is {len} bytes, over the limit of {MAX_JOB_BYTES}")]
    TooLarge { len: usize },
    #[error("job is not a valid send job: {0}")]
    Malformed(String),
    #[error("campaignId is invalid: {0}")]
    CampaignId(NameError),
    #[error("openId is invalid: {0}")]
    OpenId(NameError),
    #[error("appId is invalid: {0}")]
    AppId(NameError),
    #[error("templateId is empty")]
    EmptyTemplate,
    #[error("attempt {0} is over the limit of {MAX_JOB_ATTEMPT}")]
    Attempt(u32),
}

impl JobError {
    pub fn code(&self) -> &'static str {
        match self {
            JobError::TooLarge { .. } => "too_large",
            JobError::Malformed(_) => "malformed_job",
            JobError::CampaignId(_) => "invalid_campaign_id",
            JobError::OpenId(_) => "invalid_open_id",
            JobError::AppId(_) => "invalid_app_id",
            JobError::EmptyTemplate => "empty_template_id",
            JobError::Attempt(_) => "invalid_attempt",
        }
    }
}

/// A campaign id is used in Redis key names and as a campaign-mark field: printable ASCII
/// without spaces, at most 128 bytes. It always ends its key, after the key's hash tag
/// (`{ns}:camp:{<app>.<n>}:<id>`, `{ns}:cs:{<app>.<shard>}:<id>`), so two ids never give the
/// same key and a `{…}` in an id never picks a key's cluster slot; and as it holds no space,
/// the mark fields `"<id>"` and `"<id> o"` of two ids never meet.
pub fn check_campaign_id(id: &str) -> Result<(), NameError> {
    // The openId rule is the same one; reuse its checks and messages.
    OpenId::new(id).map(|_| ()).map_err(|e| match e {
        NameError::Empty { .. } => NameError::Empty { what: "campaignId" },
        NameError::TooLong { len, .. } => NameError::TooLong {
            what: "campaignId",
            len,
            max: MAX_CAMPAIGN_ID_BYTES,
        },
        NameError::BadChar { allowed, .. } => NameError::BadChar {
            what: "campaignId",
            allowed,
        },
    })
}

/// Parses and validates one job.
pub fn parse_job(body: &[u8]) -> Result<ValidJob, JobError> {
    if body.len() > MAX_JOB_BYTES {
        return Err(JobError::TooLarge { len: body.len() });
    }
    let job: SendJob = serde_json::from_slice(body)
        .map_err(|e| JobError::Malformed(crate::short_reason(&e.to_string()).into_owned()))?;
    check_campaign_id(&job.campaign_id).map_err(JobError::CampaignId)?;
    let open_id = OpenId::new(&job.open_id).map_err(JobError::OpenId)?;
    let app_id = job
        .app_id
        .as_deref()
        .map(AppId::new)
        .transpose()
        .map_err(JobError::AppId)?;
    if job.template_id.trim().is_empty() {
        return Err(JobError::EmptyTemplate);
    }
    if job.attempt > MAX_JOB_ATTEMPT {
        return Err(JobError::Attempt(job.attempt));
    }
    Ok(ValidJob {
        job,
        app_id,
        open_id,
    })
}

impl SendJob {
    /// The id the campaign marks know the job's recipient under: the campaign id, or for a
    /// single message [`SINGLE_MARK`] and its messageId.
    pub fn mark_id(&self) -> std::borrow::Cow<'_, str> {
        if self.single {
            format!("{SINGLE_MARK}{}", self.campaign_id).into()
        } else {
            self.campaign_id.as_str().into()
        }
    }

    /// A campaign's job template ([`crate::Campaign::job_template`]) made into the first
    /// attempt of one recipient's job.
    pub fn for_recipient(&self, open_id: &OpenId) -> SendJob {
        SendJob {
            open_id: open_id.as_str().to_owned(),
            attempt: 0,
            retrying_since: None,
            ..self.clone()
        }
    }

    /// What the job does in its app's quiet hours: what it says, else `ignore` for a single
    /// message and `defer` for a campaign's recipient (contract 8.5).
    pub fn quiet_mode(&self) -> QuietMode {
        match self.quiet_hours {
            Some(m) => m,
            None if self.single => QuietMode::Ignore,
            None => QuietMode::Defer,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_job_parses_and_round_trips() {
        let body = br#"{"campaignId": "signin-2026-11-28", "openId": "oLvT05Abc", "templateId": "TPL_SIGNIN",
            "page": "pages/signin/index", "data": {"keyword1": "Daily check-in"},
            "emphasisKeyword": "keyword1.DATA", "attempt": 0}"#;
        let v = parse_job(body).unwrap();
        assert_eq!(v.open_id.as_str(), "oLvT05Abc");
        assert_eq!(v.job.data["keyword1"], DataItem::text("Daily check-in"));
        assert_eq!(parse_job(&v.job.to_json()).unwrap(), v);
    }

    #[test]
    fn a_data_field_keeps_what_the_campaign_gave_beside_its_value() {
        let body = br##"{"campaignId": "c", "openId": "o", "templateId": "T",
            "data": {"keyword1": {"value": "Weekly report", "color": "#173177", "x-new": [1]},
                     "keyword2": "3 new badges", "keyword3": {"value": "plain"}}}"##;
        let v = parse_job(body).unwrap();
        let k1 = &v.job.data["keyword1"];
        assert_eq!(k1.value, "Weekly report");
        assert_eq!(
            k1.to_wechat(),
            serde_json::json!({"value": "Weekly report", "color": "#173177", "x-new": [1]})
        );
        assert_eq!(v.job.data["keyword3"], DataItem::text("plain"));
        // Round trip; a bare value travels as a string.
        let again = v.job.to_json();
        assert_eq!(parse_job(&again).unwrap(), v);
        let text = String::from_utf8(again).unwrap();
        assert!(text.contains(r#""keyword3":"plain""#), "{text}");
        for bad in [
            r##"{"keyword1": {"color": "#fff"}}"##,
            r#"{"keyword1": {"value": 3}}"#,
            r#"{"keyword1": 3}"#,
        ] {
            let body =
                format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","data":{bad}}}"#);
            assert_eq!(
                parse_job(body.as_bytes()).unwrap_err().code(),
                "malformed_job",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_job_larger_than_any_campaign_makes_is_refused_unread() {
        // The largest template data a campaign may carry, escaped at worst, fits.
        let data: serde_json::Map<String, Value> = (0..16)
            .map(|i| (format!("keyword{i}"), Value::String("\u{1}".repeat(2000))))
            .collect();
        let job = serde_json::json!({"campaignId": "c", "openId": "o", "templateId": "T",
                                     "data": data})
        .to_string();
        assert!(job.len() > 6 * 32_000, "{}", job.len());
        assert!(parse_job(job.as_bytes()).is_ok());
        let huge = format!(
            r#"{{"campaignId":"c","openId":"o","templateId":"T","data":{{"k":"{}"}}}}"#,
            "y".repeat(MAX_JOB_BYTES)
        );
        let e = parse_job(huge.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "too_large");
        assert!(e.to_string().len() < 100, "{e}");
    }

    #[test]
    fn bad_jobs_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "malformed_job"),
            (br#"{"openId":"o","templateId":"T"}"#, "malformed_job"),
            (
                br#"{"campaignId":"a b","openId":"o","templateId":"T"}"#,
                "invalid_campaign_id",
            ),
            (
                br#"{"campaignId":"c","openId":"","templateId":"T"}"#,
                "invalid_open_id",
            ),
            (
                br#"{"campaignId":"c","appId":"wx:1","openId":"o","templateId":"T"}"#,
                "invalid_app_id",
            ),
            (
                br#"{"campaignId":"c","openId":"o","templateId":" "}"#,
                "empty_template_id",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(parse_job(body).unwrap_err().code(), *code);
        }
    }

    #[test]
    fn the_attempt_is_bounded_so_counting_one_more_cannot_overflow() {
        let job = |attempt: u64| {
            format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","attempt":{attempt}}}"#)
        };
        let max = u64::from(MAX_JOB_ATTEMPT);
        assert_eq!(
            parse_job(job(max).as_bytes()).unwrap().job.attempt,
            MAX_JOB_ATTEMPT
        );
        for attempt in [max + 1, u64::from(u32::MAX)] {
            let err = parse_job(job(attempt).as_bytes()).unwrap_err();
            assert_eq!(err.code(), "invalid_attempt", "{attempt}");
        }
        // Beyond u32, or negative: not a job at all.
        for attempt in ["4294967296", "-1", "1.5", "\"1\""] {
            let body = format!(
                r#"{{"campaignId":"c","openId":"o","templateId":"T","attempt":{attempt}}}"#
            );
            assert_eq!(
                parse_job(body.as_bytes()).unwrap_err().code(),
                "malformed_job"
            );
        }
    }

    #[test]
    fn every_hostile_campaign_id_and_open_id_gets_its_code() {
        use crate::names::hostile::{self, Verdict};
        for (id, verdict) in hostile::ids() {
            let as_campaign =
                serde_json::json!({"campaignId": id, "openId": "o", "templateId": "T"});
            let as_user = serde_json::json!({"campaignId": "c", "openId": id, "templateId": "T"});
            for (body, code) in [
                (as_campaign, "invalid_campaign_id"),
                (as_user, "invalid_open_id"),
            ] {
                let got = parse_job(body.to_string().as_bytes());
                match verdict {
                    Verdict::Accepted => assert!(got.is_ok(), "{id:?}: {got:?}"),
                    _ => assert_eq!(got.unwrap_err().code(), code, "{id:?}"),
                }
            }
            // The campaign id's own messages name it, and never echo the value.
            match (verdict, check_campaign_id(&id)) {
                (Verdict::Accepted, r) => assert!(r.is_ok(), "{id:?}"),
                (Verdict::Empty, Err(NameError::Empty { what })) => assert_eq!(what, "campaignId"),
                (Verdict::TooLong, Err(NameError::TooLong { what, len, max })) => {
                    assert_eq!(
                        (what, len, max),
                        ("campaignId", id.len(), MAX_CAMPAIGN_ID_BYTES)
                    );
                }
                (Verdict::BadChar, Err(NameError::BadChar { what, .. })) => {
                    assert_eq!(what, "campaignId");
                }
                (v, r) => panic!("{id:?}: {v:?} but {r:?}"),
            }
        }
    }

    #[test]
    fn very_deep_json_is_refused_or_skipped_not_a_crash() {
        // 40,000 levels: deep, and under the job size bound even as objects.
        for open in ["[", r#"{"a":"#] {
            let deep = open.repeat(40_000);
            assert_eq!(
                parse_job(deep.as_bytes()).unwrap_err().code(),
                "malformed_job"
            );
            let body = format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","data":{deep}"#);
            assert_eq!(
                parse_job(body.as_bytes()).unwrap_err().code(),
                "malformed_job"
            );
            // In an unknown field: skipped without recursion; unterminated, found truncated.
            let closed = crate::upload::tests::nested(40_000, open != "[", "1");
            let body =
                format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","x":{closed}}}"#);
            assert!(parse_job(body.as_bytes()).is_ok());
            let body = format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","x":{deep}"#);
            assert_eq!(
                parse_job(body.as_bytes()).unwrap_err().code(),
                "malformed_job"
            );
        }
    }

    /// Fragments of send jobs, right and wrong, to assemble at random.
    const FRAGMENTS: &[&str] = &[
        r#""campaignId":"c1""#,
        r#""campaignId":"a b""#,
        r#""campaignId":"c{1}:*""#,
        r#""campaignId":7"#,
        r#""openId":"oUser""#,
        r#""openId":"o\n""#,
        r#""openId":"""#,
        r#""openId":null"#,
        r#""templateId":"T""#,
        r#""templateId":" ""#,
        r#""appId":"wx1""#,
        r#""appId":"wx:1""#,
        r#""appId":null"#,
        r#""page":"p""#,
        r#""page":1"#,
        r#""data":{"keyword1":"v"}"#,
        r#""data":{"keyword1":{"value":"v"}}"#,
        r#""data":[]"#,
        r#""emphasisKeyword":"keyword1.DATA""#,
        r#""attempt":0"#,
        r#""attempt":4294967295"#,
        r#""attempt":-1"#,
        r#""extra":[[{"deep":1}]]"#,
    ];

    /// What every accepted job guarantees, whatever the input.
    fn check_accepted(v: &ValidJob) -> Result<(), proptest::test_runner::TestCaseError> {
        proptest::prop_assert!(check_campaign_id(&v.job.campaign_id).is_ok());
        proptest::prop_assert_eq!(v.open_id.as_str(), v.job.open_id.as_str());
        proptest::prop_assert!(!v.job.template_id.trim().is_empty());
        proptest::prop_assert!(v.job.attempt <= MAX_JOB_ATTEMPT);
        // What a sender re-publishes parses back to the same job.
        let again = parse_job(&v.job.to_json());
        proptest::prop_assert_eq!(again.as_ref(), Ok(v));
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(v) = parse_job(&body) {
                check_accepted(&v)?;
            }
        }

        #[test]
        fn never_panics_on_json_ish_strings(body in r#"[{}\[\]":,a-zA-Z0-9 .\\-]{0,300}"#) {
            if let Ok(v) = parse_job(body.as_bytes()) {
                check_accepted(&v)?;
            }
        }

        #[test]
        fn never_panics_on_any_string(body in proptest::prelude::any::<String>()) {
            if let Ok(v) = parse_job(body.as_bytes()) {
                check_accepted(&v)?;
            }
        }

        #[test]
        fn any_strings_in_every_field_parse_or_say_why(
            campaign_id in proptest::prelude::any::<String>(),
            open_id in proptest::prelude::any::<String>(),
            template_id in proptest::prelude::any::<String>(),
            value in proptest::prelude::any::<String>(),
            attempt in proptest::prelude::any::<u32>(),
        ) {
            let body = serde_json::json!({"campaignId": campaign_id, "openId": open_id,
                "templateId": template_id, "data": {"keyword1": value}, "attempt": attempt});
            match parse_job(body.to_string().as_bytes()) {
                Ok(v) => check_accepted(&v)?,
                Err(e) => {
                    let want = if check_campaign_id(&campaign_id).is_err() {
                        "invalid_campaign_id"
                    } else if OpenId::new(&open_id).is_err() {
                        "invalid_open_id"
                    } else if template_id.trim().is_empty() {
                        "empty_template_id"
                    } else {
                        "invalid_attempt"
                    };
                    proptest::prop_assert_eq!(e.code(), want);
                }
            }
        }

        #[test]
        fn generated_json_parses_or_says_why(value in crate::upload::tests::json_value()) {
            match parse_job(value.to_string().as_bytes()) {
                Ok(v) => check_accepted(&v)?,
                Err(e) => proptest::prop_assert!(!e.code().is_empty()),
            }
        }

        #[test]
        fn nesting_of_any_depth_is_refused_or_skipped_never_a_crash(
            depth in 0usize..400,
            object in proptest::prelude::any::<bool>(),
        ) {
            let deep = crate::upload::tests::nested(depth, object, "1");
            // In a known field it is the wrong type, or too deep: malformed either way.
            let body = format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","data":{deep}}}"#);
            proptest::prop_assert_eq!(parse_job(body.as_bytes()).unwrap_err().code(), "malformed_job");
            // An unknown field is skipped without recursion, whatever its depth.
            let body = format!(r#"{{"campaignId":"c","openId":"o","templateId":"T","x":{deep}}}"#);
            proptest::prop_assert!(parse_job(body.as_bytes()).is_ok());
        }

        #[test]
        fn assembled_jobs_parse_or_say_why(
            picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..10)
        ) {
            let body = format!(
                "{{{}}}",
                picks.iter().map(|&i| FRAGMENTS[i]).collect::<Vec<_>>().join(",")
            );
            match parse_job(body.as_bytes()) {
                Ok(v) => check_accepted(&v)?,
                Err(e) => proptest::prop_assert!(!e.code().is_empty()),
            }
        }
    }

    #[test]
    fn quiet_hours_fields_are_optional_and_default_by_the_jobs_kind() {
        let old = br#"{"campaignId": "c1", "openId": "oLvT05Abc", "templateId": "T"}"#;
        let v = parse_job(old).unwrap();
        assert_eq!((v.job.quiet_hours, v.job.defer_until), (None, None));
        assert_eq!(v.job.quiet_mode(), QuietMode::Defer, "a campaign's default");
        let mut single = v.job.clone();
        single.single = true;
        assert_eq!(
            single.quiet_mode(),
            QuietMode::Ignore,
            "a message's default"
        );
        // Absent fields stay absent on the wire (older senders read the job as before).
        assert!(!String::from_utf8(v.job.to_json())
            .unwrap()
            .contains("quiet"));
        let mut held = v.job;
        held.quiet_hours = Some(QuietMode::Skip);
        held.defer_until = Some(1_790_000_000_000);
        let text = String::from_utf8(held.to_json()).unwrap();
        assert!(
            text.contains(r#""quietHours":"skip""#)
                && text.contains(r#""deferUntil":1790000000000"#),
            "{text}"
        );
        let back = parse_job(text.as_bytes()).unwrap().job;
        assert_eq!(back, held);
        assert_eq!(back.quiet_mode(), QuietMode::Skip);
        let bad = br#"{"campaignId": "c1", "openId": "oLvT05Abc", "templateId": "T", "quietHours": "later"}"#;
        assert!(parse_job(bad).is_err());
    }
}
