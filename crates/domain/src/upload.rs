//! The credential upload message (contract sections 4 and 7): parsing and validation.
//!
//! [`parse_upload`] turns raw broker bytes into an [`Upload`] holding the usable credentials
//! (formIds, and each prepayId as its three uses) and the subscribe consents it grants, or a
//! [`PoisonReason`] saying why the whole message cannot be used. It decides expiry (clamped
//! to 7 days after receipt, never trusting the client further) and rejects bad entries one by
//! one, so a message with some bad entries still yields the good ones.
//!
//! An upload carries any combination of `formIds`, `prepayIds` and `subscriptions` (at least
//! one of the three, else `missing_form_ids`, the code kept from when `formIds` was the only
//! field), and at least one usable entry among them all (else `no_usable_entry`).
//! - `formIds` and `prepayIds`: an array of `{"formId"|"prepayId": .., "expire": ms}`, or a
//!   JSON string holding that array (the seed's client sends `JSON.stringify(formIds)`).
//! - `subscriptions`: the object `wx.requestSubscribeMessage` returns (or a JSON string of
//!   it). Each template id whose value is `"accept"` grants one consent; `"reject"`, `"ban"`
//!   and `"filter"` grant nothing; `errMsg` is ignored; any other value, or a key that is not
//!   a valid template id ([`check_template_id`]), is a bad entry.
//!
//! Hostile input costs at most what its size allows: the body is bounded by
//! [`UploadLimits::max_bytes`] before it is parsed, and the number of entries of the three
//! fields together by [`UploadLimits::max_entries`] before any entry is looked at
//! (`too_many_entries`). The openId and appId are validated names ([`crate::names`]); bad
//! ones poison the message. Rejection reasons never quote the client's text (they can end up
//! in a dead letter's header). It must never panic on any input, and does no I/O.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::body::{json_object, BodyError};
use crate::credential::{check_template_id, Consent, Credential, PREPAY_USES};
use crate::names::{AppId, OpenId};
use crate::CREDENTIAL_LIFETIME_MS;

/// What WeChat's developer tools hand out instead of a real formId.
pub const DEVTOOLS_PLACEHOLDER: &str = "the formId is a mock one";

/// Longest formId accepted (real ones are 32 characters).
pub const MAX_FORM_ID_BYTES: usize = 128;

/// Longest prepayId accepted (real ones are 36 characters: `wx` and 34 digits and letters).
pub const MAX_PREPAY_ID_BYTES: usize = 128;

/// Default of [`UploadLimits::max_entries`]: far more than a client collects in 7 days, and
/// ten times the default per-user cap (`WXPUSH_USER_CAP`).
pub const DEFAULT_MAX_UPLOAD_ENTRIES: usize = 1000;

/// The upload's fields that carry entries, as named in [`RejectedEntry::field`].
pub const FORM_IDS: &str = "formIds";
pub const PREPAY_IDS: &str = "prepayIds";
pub const SUBSCRIPTIONS: &str = "subscriptions";

/// The key of `wx.requestSubscribeMessage`'s result that is not a template id.
const ERR_MSG: &str = "errMsg";

/// Bounds on one upload message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Most usable credentials kept from one upload (a prepayId counts its three uses): those
    /// expiring last, the ones the bank would keep under its per-user cap
    /// (`WXPUSH_USER_CAP`); the rest are dropped while parsing, counted in
    /// [`Upload::capped`], and never allocated (default [`crate::config::DEFAULT_USER_CAP`]).
    pub max_kept: usize,
    /// Largest body accepted, in bytes (`WXPUSH_MAX_MESSAGE_BYTES`, default 64 KiB).
    pub max_bytes: usize,
    /// Most entries accepted in `formIds`, `prepayIds` and `subscriptions` together (an
    /// array element, or a key of `subscriptions` other than `errMsg`), counted before any
    /// entry is parsed (so bad and duplicate entries count too); more poisons the message as
    /// `too_many_entries` (default [`DEFAULT_MAX_UPLOAD_ENTRIES`]).
    pub max_entries: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_kept: crate::config::DEFAULT_USER_CAP as usize,
            max_bytes: 64 * 1024,
            max_entries: DEFAULT_MAX_UPLOAD_ENTRIES,
        }
    }
}

/// A valid upload: whose credentials, for which app, and which entries were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub open_id: OpenId,
    /// `None` means the install's default app.
    pub app_id: Option<AppId>,
    /// Credentials still usable at receipt, expiry already clamped: the formIds, then each
    /// prepayId as its three uses (kind `PrepayId { use_no: 1..=3 }`, one expiry).
    pub credentials: Vec<Credential>,
    /// Subscribe consents granted, one per accepted template (`count` 1).
    pub consents: Vec<Consent>,
    /// Entries that were malformed, with the reason.
    pub rejected: Vec<RejectedEntry>,
    /// Entries (formIds, prepayIds) that were well formed but had already expired when
    /// received.
    pub expired: usize,
    /// Usable credentials (prepayId uses) dropped because more than
    /// [`UploadLimits::max_kept`] came in one upload: those expiring soonest.
    pub capped: usize,
}

impl Upload {
    /// Every credential of the upload for the bank: [`Upload::credentials`], then each
    /// consent as a credential of kind `Consent`.
    pub fn into_credentials(self) -> impl Iterator<Item = Credential> {
        let consents = self.consents;
        self.credentials
            .into_iter()
            .chain(consents.into_iter().flat_map(|c| {
                let n = c.count;
                (0..n).map(move |_| Credential::consent(c.template_id.clone()))
            }))
    }
}

/// One entry of `formIds`, `prepayIds` or `subscriptions` that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEntry {
    /// [`FORM_IDS`], [`PREPAY_IDS`] or [`SUBSCRIPTIONS`].
    pub field: &'static str,
    /// Position in the array, or among the keys of `subscriptions` (`errMsg` left out).
    pub index: usize,
    pub reason: String,
}

/// Why a whole message cannot be used. It goes to the dead-letter queue with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoisonReason {
    #[error("message is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("message is not valid UTF-8")]
    NotUtf8,
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is not a JSON object")]
    NotObject,
    #[error("openId is missing")]
    MissingOpenId,
    #[error("openId is invalid: {0}")]
    InvalidOpenId(String),
    #[error("appId is invalid: {0}")]
    InvalidAppId(String),
    #[error("appId {0} is not configured in this install")]
    UnknownApp(String),
    /// None of `formIds`, `prepayIds`, `subscriptions` (code `missing_form_ids`, kept from
    /// when `formIds` was required).
    #[error("formIds is missing (and there are no prepayIds or subscriptions)")]
    MissingFormIds,
    #[error("formIds is invalid: {0}")]
    InvalidFormIds(String),
    #[error("prepayIds is invalid: {0}")]
    InvalidPrepayIds(String),
    #[error("subscriptions is invalid: {0}")]
    InvalidSubscriptions(String),
    #[error("the upload has {len} entries, over the limit of {max}")]
    TooManyEntries { len: usize, max: usize },
    /// Not read: it came back unsettled too often (the roles' redelivery limit).
    #[error("delivered {times} times without being settled: an error that recurs, or a crash or a lost connection each time")]
    Redelivered { times: u32 },
    #[error(
        "no usable credential: {rejected} entries rejected, {expired} already expired{detail}"
    )]
    NoUsableEntry {
        rejected: usize,
        expired: usize,
        detail: String,
    },
}

impl From<BodyError> for PoisonReason {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { len, max } => PoisonReason::TooLarge { len, max },
            BodyError::NotUtf8 => PoisonReason::NotUtf8,
            BodyError::NotJson(e) => PoisonReason::NotJson(e),
            BodyError::NotObject => PoisonReason::NotObject,
        }
    }
}

impl PoisonReason {
    /// A short stable code for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PoisonReason::TooLarge { .. } => "too_large",
            PoisonReason::NotUtf8 => "not_utf8",
            PoisonReason::NotJson(_) => "not_json",
            PoisonReason::NotObject => "not_object",
            PoisonReason::MissingOpenId => "missing_open_id",
            PoisonReason::InvalidOpenId(_) => "invalid_open_id",
            PoisonReason::InvalidAppId(_) => "invalid_app_id",
            PoisonReason::UnknownApp(_) => "unknown_app",
            PoisonReason::MissingFormIds => "missing_form_ids",
            PoisonReason::InvalidFormIds(_) => "invalid_form_ids",
            PoisonReason::InvalidPrepayIds(_) => "invalid_prepay_ids",
            PoisonReason::InvalidSubscriptions(_) => "invalid_subscriptions",
            PoisonReason::TooManyEntries { .. } => "too_many_entries",
            PoisonReason::NoUsableEntry { .. } => "no_usable_entry",
            PoisonReason::Redelivered { .. } => "redelivered",
        }
    }
}

/// Parse one upload received at `received_at_ms` (Unix milliseconds).
pub fn parse_upload(
    body: &[u8],
    received_at_ms: i64,
    limits: UploadLimits,
) -> Result<Upload, PoisonReason> {
    let obj = json_object(body, limits.max_bytes)?;

    let open_id = match obj.get("openId") {
        None | Some(Value::Null) => return Err(PoisonReason::MissingOpenId),
        Some(Value::String(s)) => {
            OpenId::new(s).map_err(|e| PoisonReason::InvalidOpenId(e.to_string()))?
        }
        Some(_) => {
            return Err(PoisonReason::InvalidOpenId("not a string".into()));
        }
    };
    let app_id = match obj.get("appId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(AppId::new(s).map_err(|e| PoisonReason::InvalidAppId(e.to_string()))?)
        }
        Some(_) => return Err(PoisonReason::InvalidAppId("not a string".into())),
    };

    let form_ids = array_field(&obj, FORM_IDS).map_err(PoisonReason::InvalidFormIds)?;
    let prepay_ids = array_field(&obj, PREPAY_IDS).map_err(PoisonReason::InvalidPrepayIds)?;
    let subscriptions =
        object_field(&obj, SUBSCRIPTIONS).map_err(PoisonReason::InvalidSubscriptions)?;
    if form_ids.is_none() && prepay_ids.is_none() && subscriptions.is_none() {
        return Err(PoisonReason::MissingFormIds);
    }
    let form_ids = form_ids.unwrap_or_default();
    let prepay_ids = prepay_ids.unwrap_or_default();
    let subscriptions = subscriptions.unwrap_or_default();

    let len = form_ids.len() + prepay_ids.len() + subscriptions.len()
        - usize::from(subscriptions.contains_key(ERR_MSG));
    if len > limits.max_entries {
        return Err(PoisonReason::TooManyEntries {
            len,
            max: limits.max_entries,
        });
    }

    let latest = received_at_ms.saturating_add(CREDENTIAL_LIFETIME_MS);
    let mut upload = Upload {
        open_id,
        app_id,
        credentials: Vec::new(),
        consents: Vec::new(),
        rejected: Vec::new(),
        expired: 0,
        capped: 0,
    };
    // The usable entries, borrowed from the parsed body: (expiry ms, id, uses).
    let mut usable: Vec<(i64, &str, u8)> = Vec::with_capacity(form_ids.len() + prepay_ids.len());
    for (field, entries) in [(FORM_IDS, &form_ids), (PREPAY_IDS, &prepay_ids)] {
        let uses = if field == FORM_IDS { 1 } else { PREPAY_USES };
        for (index, entry) in entries.iter().enumerate() {
            match parse_entry(entry, field, latest) {
                Ok((_, expire_ms)) if expire_ms <= received_at_ms => upload.expired += 1,
                Ok((value, expire_ms)) => usable.push((expire_ms, value, uses)),
                Err(reason) => upload.rejected.push(RejectedEntry {
                    field,
                    index,
                    reason,
                }),
            }
        }
    }
    // Only the uses the bank could keep are built: those expiring last (the order is stable,
    // so among equal expiries the first given wins).
    let total: usize = usable.iter().map(|(_, _, u)| usize::from(*u)).sum();
    if total > limits.max_kept {
        usable.sort_by_key(|u| std::cmp::Reverse(u.0));
    }
    upload.credentials.reserve(total.min(limits.max_kept));
    for (expire_ms, value, uses) in usable {
        let room = limits.max_kept - upload.credentials.len();
        let kept = usize::from(uses).min(room);
        upload.capped += usize::from(uses) - kept;
        let expires_at = expire_ms.div_euclid(1000);
        if uses == 1 {
            if kept == 1 {
                upload
                    .credentials
                    .push(Credential::form_id(value, expires_at));
            }
        } else {
            upload
                .credentials
                .extend(Credential::prepay_uses(value, expires_at).take(kept));
        }
    }
    let templates = subscriptions.iter().filter(|(k, _)| k.as_str() != ERR_MSG);
    let mut declined = 0usize;
    for (index, (template_id, answer)) in templates.enumerate() {
        match parse_subscription(template_id, answer) {
            Ok(true) => upload.consents.push(Consent {
                template_id: template_id.clone(),
                count: 1,
            }),
            Ok(false) => declined += 1,
            Err(reason) => upload.rejected.push(RejectedEntry {
                field: SUBSCRIPTIONS,
                index,
                reason,
            }),
        }
    }
    // A user who declined every template sent a well-formed answer with nothing to keep: not
    // poison (every "reject all" tap would fill the dead-letter queue otherwise).
    let only_declined = declined > 0 && upload.rejected.is_empty() && upload.expired == 0;
    if upload.credentials.is_empty() && upload.consents.is_empty() && !only_declined {
        // (`max_kept` is at least 1, so a capped upload always keeps something.)
        let detail = upload
            .rejected
            .first()
            .map(|r| format!(" ({} entry {}: {})", r.field, r.index, r.reason))
            .unwrap_or_default();
        return Err(PoisonReason::NoUsableEntry {
            rejected: upload.rejected.len(),
            expired: upload.expired,
            detail,
        });
    }
    Ok(upload)
}

/// A field holding an array, or a JSON string of one (as the seed's client sends
/// `JSON.stringify(formIds)`); `None` when absent or `null`. A string is parsed here (its
/// cost bounded by the body's size, like the body's own parse); an array is borrowed.
fn array_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<Cow<'a, [Value]>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(Cow::Borrowed(a.as_slice()))),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => Ok(Some(Cow::Owned(a))),
            Ok(_) => Err("a string that does not hold a JSON array".into()),
            Err(e) => Err(format!("a string that is not JSON: {e}")),
        },
        Some(_) => Err("neither an array nor a JSON string of one".into()),
    }
}

/// A field holding an object, or a JSON string of one; `None` when absent or `null`.
fn object_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<Cow<'a, Map<String, Value>>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(Cow::Borrowed(m))),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(Some(Cow::Owned(m))),
            Ok(_) => Err("a string that does not hold a JSON object".into()),
            Err(e) => Err(format!("a string that is not JSON: {e}")),
        },
        Some(_) => Err("neither an object nor a JSON string of one".into()),
    }
}

/// Checks one `{"formId"|"prepayId", "expire"}` entry of `field`; returns the id and its
/// clamped expiry in milliseconds.
fn parse_entry<'a>(
    entry: &'a Value,
    field: &str,
    latest_ms: i64,
) -> Result<(&'a str, i64), String> {
    let Value::Object(obj) = entry else {
        return Err("not an object".into());
    };
    let (key, max) = if field == FORM_IDS {
        ("formId", MAX_FORM_ID_BYTES)
    } else {
        ("prepayId", MAX_PREPAY_ID_BYTES)
    };
    let value = match obj.get(key) {
        Some(Value::String(s)) if s.trim().is_empty() => return Err(format!("{key} is empty")),
        Some(Value::String(s)) if field == FORM_IDS && s == DEVTOOLS_PLACEHOLDER => {
            return Err("formId is the devtools placeholder, not a credential".into())
        }
        Some(Value::String(s)) if s.len() > max => {
            return Err(format!(
                "{key} is {} bytes, over the limit of {max}",
                s.len()
            ))
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            return Err(format!("{key} contains a control character"))
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(format!("{key} is not a string")),
        None => return Err(format!("{key} is missing")),
    };
    let expire = match obj.get("expire") {
        None | Some(Value::Null) => latest_ms,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) => ms,
            None => match n.as_f64() {
                Some(f) if (0.0..9.0e15).contains(&f) => f as i64,
                _ => return Err("expire is not a time in epoch milliseconds".into()),
            },
        },
        Some(_) => return Err("expire is not a number".into()),
    };
    if expire < 0 {
        return Err("expire is negative".into());
    }
    Ok((value, expire.min(latest_ms)))
}

/// Checks one `"<templateId>": "<answer>"` of `subscriptions`: `true` when it grants a
/// consent (`accept`), `false` when it grants none (`reject`, `ban`, `filter`).
fn parse_subscription(template_id: &str, answer: &Value) -> Result<bool, String> {
    check_template_id(template_id).map_err(|e| format!("not a template id: {e}"))?;
    match answer {
        Value::String(s) if s == "accept" => Ok(true),
        Value::String(s) if matches!(s.as_str(), "reject" | "ban" | "filter") => Ok(false),
        Value::String(_) => Err("the answer is not accept, reject, ban or filter".into()),
        _ => Err("the answer is not a string".into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credential::CredentialKind;
    use crate::names::hostile::{self, Verdict};
    use proptest::prelude::*;

    const NOW: i64 = 1_764_300_000_000;
    const DAY: i64 = 86_400_000;

    fn parse(s: &str) -> Result<Upload, PoisonReason> {
        parse_upload(s.as_bytes(), NOW, UploadLimits::default())
    }

    #[test]
    fn accepts_the_contract_example() {
        let u = parse(&format!(
            r#"{{"openId":"oLvT05Abc","formIds":[{{"formId":"f3c5e0a6b1","expire":{}}}]}}"#,
            NOW + DAY
        ))
        .unwrap();
        assert_eq!(u.open_id.as_str(), "oLvT05Abc");
        assert_eq!(u.app_id, None);
        assert_eq!(
            u.credentials,
            vec![Credential::form_id("f3c5e0a6b1", (NOW + DAY) / 1000)]
        );
    }

    #[test]
    fn form_ids_may_be_a_json_string_as_the_seed_client_sends() {
        let inner = format!(r#"[{{"formId":"a","expire":{}}}]"#, NOW + DAY);
        let msg = serde_json::json!({"openId": "o1", "formIds": inner}).to_string();
        let u = parse(&msg).unwrap();
        assert_eq!(u.credentials.len(), 1);
    }

    #[test]
    fn expiry_is_clamped_to_seven_days_and_defaults_to_it() {
        let msg = format!(
            r#"{{"openId":"o1","formIds":[{{"formId":"a","expire":{}}},{{"formId":"b"}}]}}"#,
            NOW + 30 * DAY
        );
        let u = parse(&msg).unwrap();
        let seven = (NOW + 7 * DAY) / 1000;
        assert!(u.credentials.iter().all(|c| c.expires_at == seven));
    }

    #[test]
    fn expired_and_bad_entries_are_dropped_good_ones_kept() {
        let msg = format!(
            r#"{{"openId":"o1","extra":1,"formIds":[
                {{"formId":"old","expire":{}}},
                {{"formId":"the formId is a mock one"}},
                {{"formId":""}},
                {{"formId":7}},
                "bare",
                {{"formId":"ok","expire":"soon"}},
                {{"formId":"good","expire":{}}}]}}"#,
            NOW - 1,
            NOW + DAY
        );
        let u = parse(&msg).unwrap();
        assert_eq!(u.expired, 1);
        assert_eq!(u.rejected.len(), 5);
        assert_eq!(u.credentials.len(), 1);
        assert_eq!(u.credentials[0].value, "good");
        assert!(u.rejected[0].reason.contains("placeholder"));
    }

    #[test]
    fn only_the_uses_the_bank_could_keep_are_built_those_expiring_last() {
        // 450 prepayIds (1,350 uses) and 20 formIds; the bank keeps 100 per user.
        let prepay: Vec<_> = (0..450)
            .map(|i| serde_json::json!({"prepayId": format!("wxp{i:04}"), "expire": NOW + DAY + i * 1000}))
            .collect();
        let forms: Vec<_> = (0..20)
            .map(|i| serde_json::json!({"formId": format!("f{i:02}"), "expire": NOW + DAY + 500 * 1000 + i}))
            .collect();
        let body =
            serde_json::json!({"openId": "o1", "prepayIds": prepay, "formIds": forms}).to_string();
        let limits = UploadLimits {
            max_kept: 100,
            ..UploadLimits::default()
        };
        let u = parse_upload(body.as_bytes(), NOW, limits).unwrap();
        assert_eq!(u.credentials.len(), 100);
        assert_eq!(u.capped, 1350 + 20 - 100);
        // The 20 formIds expire last, then prepayIds 449 down: 26 whole ones and 2 uses of the
        // 27th (20 + 78 + 2 = 100).
        let latest = |c: &Credential| c.expires_at;
        let kept_min = u.credentials.iter().map(latest).min().unwrap();
        assert_eq!(kept_min, (NOW + DAY + 423 * 1000) / 1000);
        let uses_of = |id: &str| u.credentials.iter().filter(|c| c.value == id).count();
        assert_eq!(uses_of("wxp0449"), 3);
        assert_eq!(uses_of("wxp0424"), 3);
        assert_eq!(uses_of("wxp0423"), 2);
        assert_eq!(uses_of("wxp0422"), 0);
        assert_eq!(uses_of("f19"), 1);
        // At or under the cap nothing is dropped and the order is the upload's.
        let small = serde_json::json!({"openId": "o1", "formIds": forms}).to_string();
        let u = parse_upload(small.as_bytes(), NOW, limits).unwrap();
        assert_eq!(u.capped, 0);
        let values: Vec<_> = u.credentials.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(values.first(), Some(&"f00"));
        assert_eq!(values.len(), 20);
    }

    #[test]
    fn poison_messages_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe", "not_utf8"),
            (b"{not json", "not_json"),
            (b"[1,2]", "not_object"),
            (br#"{"formIds":[]}"#, "missing_open_id"),
            (br#"{"openId":"","formIds":[]}"#, "invalid_open_id"),
            (br#"{"openId":"a b","formIds":[]}"#, "invalid_open_id"),
            (br#"{"openId":5,"formIds":[]}"#, "invalid_open_id"),
            (
                br#"{"openId":"o","appId":"wx:1","formIds":[]}"#,
                "invalid_app_id",
            ),
            (br#"{"openId":"o"}"#, "missing_form_ids"),
            (br#"{"openId":"o","formIds":3}"#, "invalid_form_ids"),
            (br#"{"openId":"o","formIds":"{}"}"#, "invalid_form_ids"),
            (br#"{"openId":"o","formIds":[]}"#, "no_usable_entry"),
            (br#"{"openId":"o","formIds":null,"prepayIds":null}"#, "missing_form_ids"),
            (br#"{"openId":"o","prepayIds":{}}"#, "invalid_prepay_ids"),
            (br#"{"openId":"o","prepayIds":"[1"}"#, "invalid_prepay_ids"),
            (br#"{"openId":"o","subscriptions":[]}"#, "invalid_subscriptions"),
            (br#"{"openId":"o","subscriptions":"[]"}"#, "invalid_subscriptions"),
            (br#"{"openId":"o","subscriptions":7}"#, "invalid_subscriptions"),
            (
                br#"{"openId":"o","formIds":[{"formId":"f"}],"prepayIds":5}"#,
                "invalid_prepay_ids",
            ),
            (br#"{"openId":"o","prepayIds":[]}"#, "no_usable_entry"),
            (br#"{"openId":"o","subscriptions":{}}"#, "no_usable_entry"),
            (
                br#"{"openId":"o","subscriptions":{"errMsg":"requestSubscribeMessage:ok","T":"x"}}"#,
                "no_usable_entry",
            ),
            (
                br#"{"openId":"o","formIds":[{"formId":"the formId is a mock one"}]}"#,
                "no_usable_entry",
            ),
        ];
        for (body, code) in cases {
            let err = parse_upload(body, NOW, UploadLimits::default()).unwrap_err();
            assert_eq!(err.code(), *code, "{}", String::from_utf8_lossy(body));
        }
        // A user who declined every template: nothing to keep, but not poison.
        let declined = br#"{"openId":"o","subscriptions":{"errMsg":"requestSubscribeMessage:ok","T":"reject","U":"ban"}}"#;
        let u = parse_upload(declined, NOW, UploadLimits::default()).unwrap();
        assert!(u.credentials.is_empty() && u.consents.is_empty() && u.rejected.is_empty());
        let big = vec![b' '; 100];
        let err = parse_upload(
            &big,
            NOW,
            UploadLimits {
                max_bytes: 99,
                ..UploadLimits::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn deep_json_is_refused_not_a_crash() {
        let deep = "[".repeat(100_000);
        let err = parse_upload(
            deep.as_bytes(),
            NOW,
            UploadLimits {
                max_bytes: 1 << 20,
                ..UploadLimits::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "not_json");
    }

    fn limits(max_bytes: usize, max_entries: usize) -> UploadLimits {
        UploadLimits {
            max_bytes,
            max_entries,
            max_kept: usize::MAX,
        }
    }

    /// An upload for `o1` with `n` good entries, as an array or as the seed's JSON string.
    fn with_entries(n: usize, as_string: bool) -> Vec<u8> {
        let ids: Vec<Value> = (0..n)
            .map(|i| serde_json::json!({"formId": format!("f{i}"), "expire": NOW + DAY}))
            .collect();
        let form_ids = if as_string {
            Value::String(Value::Array(ids).to_string())
        } else {
            Value::Array(ids)
        };
        serde_json::json!({"openId": "o1", "formIds": form_ids})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_default_entry_cap_is_a_thousand() {
        assert_eq!(
            UploadLimits::default().max_entries,
            DEFAULT_MAX_UPLOAD_ENTRIES
        );
        assert_eq!(DEFAULT_MAX_UPLOAD_ENTRIES, 1000);
        let big = limits(1 << 20, DEFAULT_MAX_UPLOAD_ENTRIES);
        for as_string in [false, true] {
            let u = parse_upload(&with_entries(1000, as_string), NOW, big).unwrap();
            assert_eq!(u.credentials.len(), 1000);
            let err = parse_upload(&with_entries(1001, as_string), NOW, big).unwrap_err();
            assert_eq!(err.code(), "too_many_entries");
            assert_eq!(
                err,
                PoisonReason::TooManyEntries {
                    len: 1001,
                    max: 1000
                }
            );
            assert_eq!(
                err.to_string(),
                "the upload has 1001 entries, over the limit of 1000"
            );
        }
    }

    #[test]
    fn the_entry_cap_counts_every_entry_good_bad_or_repeated() {
        let l = limits(1 << 20, 3);
        let at = br#"{"openId":"o","formIds":[{"formId":"a"},{"formId":"a"},7]}"#;
        assert_eq!(parse_upload(at, NOW, l).unwrap().credentials.len(), 2);
        let over = br#"{"openId":"o","formIds":[{"formId":"a"},{"formId":"a"},7,null]}"#;
        assert_eq!(
            parse_upload(over, NOW, l).unwrap_err().code(),
            "too_many_entries"
        );
        // The whole message is refused, good entries too: nothing of it is stored.
        assert!(parse_upload(&with_entries(4, false), NOW, l).is_err());
        // An empty array is not over any cap; it has no usable entry.
        let empty = br#"{"openId":"o","formIds":[]}"#;
        assert_eq!(
            parse_upload(empty, NOW, limits(1 << 20, 0))
                .unwrap_err()
                .code(),
            "no_usable_entry"
        );
    }

    #[test]
    fn a_huge_array_is_refused_before_any_entry_is_read() {
        // 100,000 entries that would each be rejected if read: the cap answers first, so the
        // code is too_many_entries (not no_usable_entry) and no entry is looked at.
        let body = format!(r#"{{"openId":"o","formIds":[{}0]}}"#, "0,".repeat(99_999));
        let err = parse_upload(body.as_bytes(), NOW, limits(1 << 20, 1000)).unwrap_err();
        assert_eq!(
            err,
            PoisonReason::TooManyEntries {
                len: 100_000,
                max: 1000
            }
        );
        // The names are checked before the entries are counted.
        let body = format!(r#"{{"openId":"a b","formIds":[{}0]}}"#, "0,".repeat(99_999));
        let err = parse_upload(body.as_bytes(), NOW, limits(1 << 20, 1000)).unwrap_err();
        assert_eq!(err.code(), "invalid_open_id");
    }

    #[test]
    fn every_hostile_open_id_gets_its_code() {
        for (open_id, verdict) in hostile::ids() {
            let body = serde_json::json!({"openId": open_id, "formIds": [{"formId": "f1"}]});
            let got = parse_upload(body.to_string().as_bytes(), NOW, limits(1 << 20, 10));
            match verdict {
                Verdict::Accepted => {
                    assert_eq!(got.unwrap().open_id.as_str(), open_id, "{open_id:?}");
                }
                _ => assert_eq!(got.unwrap_err().code(), "invalid_open_id", "{open_id:?}"),
            }
        }
        // A hostile appId is never accepted: appIds are word characters only.
        for (app_id, _) in hostile::ids() {
            let body =
                serde_json::json!({"openId": "o", "appId": app_id, "formIds": [{"formId": "f"}]});
            let got = parse_upload(body.to_string().as_bytes(), NOW, limits(1 << 20, 10));
            assert_eq!(got.unwrap_err().code(), "invalid_app_id", "{app_id:?}");
        }
    }

    /// Object keys the message formats know, so generated objects reach past the first checks.
    const KEYS: &[&str] = &[
        "openId",
        "appId",
        "formIds",
        "formId",
        "prepayIds",
        "prepayId",
        "subscriptions",
        "errMsg",
        "expire",
        "campaignId",
        "templateId",
        "page",
        "keywords",
        "data",
        "value",
        "emphasisKeyword",
        "kind",
        "audience",
        "all",
        "openIds",
        "attempt",
    ];

    /// Any JSON value, nested up to 6 levels, with strings of any characters and the keys
    /// the formats know (shared by the upload, campaign and job tests).
    pub(crate) fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            any::<String>().prop_map(Value::String),
            "[a-z0-9:{}*?\\[ ]{0,12}".prop_map(Value::String),
            proptest::sample::select(&["accept", "reject", "ban", "filter"][..])
                .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            let key = prop_oneof![
                3 => proptest::sample::select(KEYS).prop_map(str::to_owned),
                1 => any::<String>(),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((key, inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// `inner` wrapped in `depth` arrays (`[[..]]`) or objects (`{"a":{"a":..}}`).
    pub(crate) fn nested(depth: usize, object: bool, inner: &str) -> String {
        if object {
            format!("{}{inner}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
        } else {
            format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
        }
    }

    /// A `wx.requestSubscribeMessage` answer: the four WeChat gives, or anything.
    fn answer() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(&["accept", "reject", "ban", "filter"][..]).prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn e_detail(e: &PoisonReason) -> String {
        match e {
            PoisonReason::NoUsableEntry { detail, .. } => detail.clone(),
            _ => String::new(),
        }
    }

    /// An upload for `o1` with `forms` formIds, `prepays` prepayIds and `subs` accepted
    /// templates (with an `errMsg`, which is not an entry).
    fn mixed(forms: usize, prepays: usize, subs: usize) -> Vec<u8> {
        let f: Vec<Value> = (0..forms)
            .map(|i| serde_json::json!({"formId": format!("f{i}"), "expire": NOW + DAY}))
            .collect();
        let p: Vec<Value> = (0..prepays)
            .map(|i| serde_json::json!({"prepayId": format!("wx{i}"), "expire": NOW + DAY}))
            .collect();
        let mut s = serde_json::json!({"errMsg": "requestSubscribeMessage:ok"});
        for i in 0..subs {
            s[format!("TPL_{i}")] = Value::from("accept");
        }
        serde_json::json!({"openId": "o1", "formIds": f, "prepayIds": p, "subscriptions": s})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn accepts_every_kind_in_one_upload() {
        let subs = serde_json::json!({"errMsg": "requestSubscribeMessage:ok",
            "TPL_ORDER_SHIPPED": "accept", "TPL_SIGNIN": "reject", "TPL_B": "ban",
            "TPL_F": "filter", "TPL_X": "accept"});
        let body = serde_json::json!({
            "openId": "oLvT05Abc", "appId": "wx1234567890abcdef",
            "formIds": [{"formId": "f3c5e0a6b1", "expire": NOW + DAY}],
            "prepayIds": [{"prepayId": "wx2017033010242291fcfe0db70013231072", "expire": NOW + 2 * DAY}],
            "subscriptions": subs,
        });
        let u = parse(&body.to_string()).unwrap();
        let p = (NOW + 2 * DAY) / 1000;
        let mut expect = vec![Credential::form_id("f3c5e0a6b1", (NOW + DAY) / 1000)];
        expect.extend(Credential::prepay_uses(
            "wx2017033010242291fcfe0db70013231072",
            p,
        ));
        assert_eq!(u.credentials, expect);
        let consent = |t: &str| Consent {
            template_id: t.into(),
            count: 1,
        };
        let mut got = u.consents.clone();
        got.sort_by(|a, b| a.template_id.cmp(&b.template_id));
        assert_eq!(got, vec![consent("TPL_ORDER_SHIPPED"), consent("TPL_X")]);
        assert!(u.rejected.is_empty(), "{:?}", u.rejected);
        assert_eq!(u.clone().into_credentials().count(), 6);
    }

    #[test]
    fn form_ids_are_not_needed_beside_another_kind() {
        let only_prepay = r#"{"openId":"o","prepayIds":[{"prepayId":"wx1"}]}"#;
        let u = parse(only_prepay).unwrap();
        let seven = (NOW + 7 * DAY) / 1000;
        assert_eq!(
            u.credentials,
            Credential::prepay_uses("wx1", seven).collect::<Vec<_>>()
        );
        let only_subs = r#"{"openId":"o","formIds":null,"subscriptions":{"T":"accept"}}"#;
        assert_eq!(parse(only_subs).unwrap().consents.len(), 1);
        // As JSON strings, like the seed's formIds.
        let strings = serde_json::json!({"openId": "o",
            "prepayIds": r#"[{"prepayId":"wx2"}]"#, "subscriptions": r#"{"T":"accept"}"#});
        let u = parse(&strings.to_string()).unwrap();
        assert_eq!((u.credentials.len(), u.consents.len()), (3, 1));
        // None of the three: the code formIds-only uploads always had.
        assert_eq!(
            parse(r#"{"openId":"o","x":1}"#).unwrap_err(),
            PoisonReason::MissingFormIds
        );
    }

    #[test]
    fn prepay_ids_are_clamped_like_form_ids_and_checked_the_same_way() {
        let body = serde_json::json!({"openId": "o", "prepayIds": [
            {"prepayId": "late", "expire": NOW + 30 * DAY},
            {"prepayId": "old", "expire": NOW - 1},
            {"prepayId": ""},
            {"prepayId": "x".repeat(MAX_PREPAY_ID_BYTES + 1)},
            {"prepayId": "a\u{1}b"},
            {"formId": "wrong key"},
            {"prepayId": "the formId is a mock one"},
        ]});
        let u = parse(&body.to_string()).unwrap();
        let seven = (NOW + 7 * DAY) / 1000;
        assert_eq!(u.expired, 1);
        assert_eq!(u.rejected.len(), 4, "{:?}", u.rejected);
        assert!(u.rejected.iter().all(|r| r.field == PREPAY_IDS));
        assert_eq!(u.rejected[3].reason, "prepayId is missing");
        // The devtools placeholder is a formId thing: as a prepayId it is only text.
        let mut expect: Vec<Credential> = Credential::prepay_uses("late", seven).collect();
        expect.extend(Credential::prepay_uses(DEVTOOLS_PLACEHOLDER, seven));
        assert_eq!(u.credentials, expect);
    }

    #[test]
    fn bad_subscriptions_are_rejected_one_by_one_the_rest_kept() {
        let body = serde_json::json!({"openId": "o", "subscriptions": {
            "errMsg": 42,
            "TPL A": "accept",
            "TPL_\u{e9}": "accept",
            "": "accept",
            "TPL_MAYBE": "maybe",
            "TPL_NUM": 1,
            "TPL_OK": "accept",
            "TPL_NO": "reject",
        }});
        let u = parse(&body.to_string()).unwrap();
        assert_eq!(
            u.consents,
            vec![Consent {
                template_id: "TPL_OK".into(),
                count: 1
            }]
        );
        assert_eq!(u.rejected.len(), 5, "{:?}", u.rejected);
        // Reasons never quote the client's text.
        for r in &u.rejected {
            assert!(
                !r.reason.contains("TPL") && !r.reason.contains("maybe"),
                "{r:?}"
            );
        }
        // Nothing usable: the first rejection names its field.
        let none = r#"{"openId":"o","subscriptions":{"T":"maybe"}}"#;
        let e = parse(none).unwrap_err();
        assert_eq!(e.code(), "no_usable_entry");
        assert!(e.to_string().contains("(subscriptions entry 0: "), "{e}");
    }

    #[test]
    fn the_entry_cap_counts_every_kind_together() {
        let l = limits(1 << 20, 3);
        assert!(
            parse_upload(&mixed(1, 1, 1), NOW, l).is_ok(),
            "errMsg is not an entry"
        );
        for body in [
            mixed(2, 1, 1),
            mixed(1, 2, 1),
            mixed(1, 1, 2),
            mixed(0, 0, 4),
        ] {
            assert_eq!(
                parse_upload(&body, NOW, l).unwrap_err(),
                PoisonReason::TooManyEntries { len: 4, max: 3 }
            );
        }
    }

    /// What every accepted upload guarantees, whatever the input.
    fn check_accepted(u: &Upload) -> Result<(), TestCaseError> {
        prop_assert!(OpenId::new(u.open_id.as_str()).is_ok());
        // Something to keep, or a clean answer declining every template.
        prop_assert!(!u.credentials.is_empty() || !u.consents.is_empty() || u.rejected.is_empty());
        let mut uses: std::collections::HashMap<(&str, i64), Vec<u8>> = Default::default();
        for c in &u.credentials {
            prop_assert!(!c.value.trim().is_empty());
            prop_assert!(c.value.len() <= MAX_FORM_ID_BYTES.max(MAX_PREPAY_ID_BYTES));
            prop_assert!(!c.value.chars().any(char::is_control));
            prop_assert!(c.expires_at * 1000 <= NOW + 7 * DAY);
            prop_assert!(c.expires_at * 1000 > NOW - 1000);
            match c.kind {
                CredentialKind::FormId => prop_assert!(c.value != DEVTOOLS_PLACEHOLDER),
                CredentialKind::PrepayId { use_no } => uses
                    .entry((c.value.as_str(), c.expires_at))
                    .or_default()
                    .push(use_no),
                CredentialKind::Consent => prop_assert!(false, "a consent among credentials"),
            }
        }
        // Every prepayId comes as its three uses, sharing one expiry.
        for (_, n) in uses {
            let count = |k: u8| n.iter().filter(|&&x| x == k).count();
            prop_assert_eq!(count(1) * 3, n.len(), "uses {:?}", n);
            prop_assert!(count(2) == count(1) && count(3) == count(1), "uses {:?}", n);
        }
        for c in &u.consents {
            prop_assert!(check_template_id(&c.template_id).is_ok());
            prop_assert!(c.template_id != ERR_MSG);
            prop_assert_eq!(c.count, 1);
        }
        let all = u.clone().into_credentials().count();
        prop_assert_eq!(all, u.credentials.len() + u.consents.len());
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_string(body in any::<String>()) {
            if let Ok(u) = parse(&body) {
                check_accepted(&u)?;
            }
        }

        #[test]
        fn any_strings_in_every_field_parse_or_say_why(
            open_id in any::<String>(),
            form_id in proptest::option::of(any::<String>()),
            prepay_id in proptest::option::of(any::<String>()),
            subscription in proptest::option::of((any::<String>(), answer())),
            app_id in proptest::option::of(any::<String>()),
            expire in any::<i64>(),
            as_string in any::<bool>(),
        ) {
            let stringify = |v: Value| if as_string { Value::String(v.to_string()) } else { v };
            let mut body = serde_json::json!({"openId": open_id});
            if let Some(f) = &form_id {
                body["formIds"] = stringify(serde_json::json!([{"formId": f, "expire": expire}]));
            }
            if let Some(p) = &prepay_id {
                body["prepayIds"] = stringify(serde_json::json!([{"prepayId": p, "expire": expire}]));
            }
            if let Some((template, answer)) = &subscription {
                let mut subs = serde_json::json!({"errMsg": "requestSubscribeMessage:ok"});
                subs[template.as_str()] = Value::String(answer.clone());
                body["subscriptions"] = stringify(subs);
            }
            if let Some(app) = &app_id {
                body["appId"] = Value::String(app.clone());
            }
            match parse(&body.to_string()) {
                Ok(u) => {
                    check_accepted(&u)?;
                    prop_assert_eq!(u.open_id.as_str(), open_id.as_str());
                    let prepay_uses = u.credentials.iter().filter(|c| c.kind != CredentialKind::FormId).count();
                    prop_assert!(prepay_uses == 0 || (prepay_uses == 3 && prepay_id.is_some()));
                    if let Some(c) = u.consents.first() {
                        let (template, answer) = subscription.as_ref().expect("a consent from a subscription");
                        prop_assert_eq!(&c.template_id, template);
                        prop_assert_eq!(answer.as_str(), "accept");
                    }
                }
                Err(e) => {
                    if OpenId::new(&open_id).is_err() {
                        prop_assert_eq!(e.code(), "invalid_open_id");
                    } else if form_id.is_none() && prepay_id.is_none() && subscription.is_none()
                        && app_id.as_deref().is_none_or(|a| AppId::new(a).is_ok())
                    {
                        prop_assert_eq!(e.code(), "missing_form_ids");
                    }
                }
            }
        }

        /// Each valid template accepted is one consent; reject, ban and filter add nothing;
        /// anything else is a rejected entry, and the other entries are kept.
        #[test]
        fn subscriptions_grant_one_consent_per_accept(
            answers in proptest::collection::btree_map("[ -~]{0,6}|TPL_[A-Z]{1,3}", answer(), 0..12),
            err_msg in proptest::option::of(any::<String>()),
        ) {
            let mut subs: Map<String, Value> = answers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            if let Some(m) = &err_msg {
                subs.insert(ERR_MSG.into(), Value::String(m.clone()));
            }
            let body = serde_json::json!({"openId": "o", "subscriptions": subs}).to_string();
            let answers: Vec<_> = answers.iter().filter(|(k, _)| k.as_str() != ERR_MSG).collect();
            let valid = |k: &str| check_template_id(k).is_ok();
            let accepted: Vec<&String> = answers
                .iter()
                .filter(|(k, v)| valid(k) && v.as_str() == "accept")
                .map(|(k, _)| *k)
                .collect();
            let bad = answers
                .iter()
                .filter(|(k, v)| !valid(k) || !matches!(v.as_str(), "accept" | "reject" | "ban" | "filter"))
                .count();
            match parse(&body) {
                Ok(u) => {
                    check_accepted(&u)?;
                    let got: Vec<&String> = u.consents.iter().map(|c| &c.template_id).collect();
                    prop_assert_eq!(got, accepted);
                    prop_assert_eq!(u.rejected.len(), bad);
                    prop_assert!(u.rejected.iter().all(|r| r.field == SUBSCRIPTIONS));
                }
                Err(e) => {
                    prop_assert!(accepted.is_empty());
                    // Declining every template is a good answer, not poison.
                    prop_assert!(bad > 0 || answers.is_empty(), "declined all: {:?}", e);
                    let detail = e_detail(&e);
                    prop_assert_eq!(e, PoisonReason::NoUsableEntry { rejected: bad, expired: 0, detail });
                }
            }
        }

        /// The cap counts the entries of the three fields together (not `errMsg`).
        #[test]
        fn the_cap_counts_all_kinds_together(
            forms in 0usize..4,
            prepays in 0usize..4,
            subs in 0usize..4,
            cap in 0usize..10,
        ) {
            let body = mixed(forms, prepays, subs);
            let total = forms + prepays + subs;
            match parse_upload(&body, NOW, limits(1 << 20, cap)) {
                Ok(u) => {
                    prop_assert!(total <= cap);
                    prop_assert_eq!(u.credentials.len(), forms + 3 * prepays);
                    prop_assert_eq!(u.consents.len(), subs);
                }
                Err(e) if total > cap => {
                    prop_assert_eq!(e, PoisonReason::TooManyEntries { len: total, max: cap });
                }
                Err(e) => {
                    prop_assert_eq!(total, 0);
                    prop_assert_eq!(e.code(), "no_usable_entry");
                }
            }
        }

        #[test]
        fn generated_json_parses_or_says_why(value in json_value(), place in 0usize..9) {
            let body = match place {
                0 => value,
                1 => serde_json::json!({"openId": "o", "formIds": value}),
                2 => serde_json::json!({"openId": value, "formIds": [{"formId": "f"}]}),
                3 => serde_json::json!({"openId": "o", "formIds": [value, {"formId": "f"}]}),
                4 => serde_json::json!({"openId": "o", "prepayIds": value}),
                5 => serde_json::json!({"openId": "o", "prepayIds": [value, {"prepayId": "p"}]}),
                6 => serde_json::json!({"openId": "o", "subscriptions": value}),
                7 => serde_json::json!({"openId": "o", "subscriptions": {"T": value, "U": "accept"}}),
                _ => serde_json::json!({"openId": "o", "formIds": value, "prepayIds": value, "subscriptions": value}),
            };
            match parse(&body.to_string()) {
                Ok(u) => check_accepted(&u)?,
                Err(e) => prop_assert!(!e.code().is_empty()),
            }
        }

        #[test]
        fn nesting_of_any_depth_is_refused_or_parsed_never_a_crash(
            depth in 0usize..400,
            object in any::<bool>(),
            place in 0usize..3,
        ) {
            let deep = nested(depth, object, "1");
            let (body, levels) = match place {
                0 => (deep, depth),
                1 => (format!(r#"{{"openId":"o","formIds":{deep}}}"#), depth + 1),
                _ => (format!(r#"{{"openId":"o","formIds":[{{"formId":"f"}}],"x":{deep}}}"#), depth + 1),
            };
            let got = parse_upload(body.as_bytes(), NOW, limits(1 << 20, 1000));
            if levels >= 130 {
                prop_assert_eq!(got.unwrap_err().code(), "not_json");
            } else if levels <= 120 {
                prop_assert!(got.err().is_none_or(|e| e.code() != "not_json"));
            }
        }

        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_upload(&body, NOW, UploadLimits::default());
        }

        #[test]
        fn stored_expiry_is_never_past_seven_days(expire in proptest::num::i64::ANY) {
            let msg = format!(r#"{{"openId":"o","formIds":[{{"formId":"a","expire":{expire}}}]}}"#);
            if let Ok(u) = parse(&msg) {
                for c in u.credentials {
                    proptest::prop_assert!(c.expires_at * 1000 <= NOW + 7 * DAY);
                    proptest::prop_assert!(c.expires_at * 1000 > NOW - 1000);
                }
            }
        }
    }
}
