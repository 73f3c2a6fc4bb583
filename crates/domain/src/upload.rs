//! The credential upload message (contract section 4): parsing and validation.
//!
//! [`parse_upload`] turns raw broker bytes into an [`Upload`] holding the usable credentials,
//! or a [`PoisonReason`] saying why the whole message cannot be used. It decides expiry
//! (clamped to 7 days after receipt, never trusting the client further) and rejects bad
//! entries one by one, so a message with some bad entries still yields the good ones.
//! It must never panic on any input, and does no I/O.

use serde_json::Value;

use crate::body::{json_object, BodyError};
use crate::credential::Credential;
use crate::names::{AppId, OpenId};
use crate::CREDENTIAL_LIFETIME_MS;

/// What WeChat's developer tools hand out instead of a real formId.
pub const DEVTOOLS_PLACEHOLDER: &str = "the formId is a mock one";

/// Longest formId accepted (real ones are 32 characters).
pub const MAX_FORM_ID_BYTES: usize = 128;

/// Bounds on one upload message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest body accepted, in bytes (`WXPUSH_MAX_MESSAGE_BYTES`, default 64 KiB).
    pub max_bytes: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
        }
    }
}

/// A valid upload: whose credentials, for which app, and which entries were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub open_id: OpenId,
    /// `None` means the install's default app.
    pub app_id: Option<AppId>,
    /// Credentials still usable at receipt, expiry already clamped.
    pub credentials: Vec<Credential>,
    /// Entries that were malformed, with the reason.
    pub rejected: Vec<RejectedEntry>,
    /// Entries that were well formed but had already expired when received.
    pub expired: usize,
}

/// One entry of `formIds` that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEntry {
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
    #[error("formIds is missing")]
    MissingFormIds,
    #[error("formIds is invalid: {0}")]
    InvalidFormIds(String),
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
            PoisonReason::NoUsableEntry { .. } => "no_usable_entry",
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

    let entries = match obj.get("formIds") {
        None | Some(Value::Null) => return Err(PoisonReason::MissingFormIds),
        Some(Value::Array(a)) => a.clone(),
        // The seed's client sends `JSON.stringify(formIds)`.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            Ok(_) => {
                return Err(PoisonReason::InvalidFormIds(
                    "a string that does not hold a JSON array".into(),
                ))
            }
            Err(e) => {
                return Err(PoisonReason::InvalidFormIds(format!(
                    "a string that is not JSON: {e}"
                )))
            }
        },
        Some(_) => {
            return Err(PoisonReason::InvalidFormIds(
                "neither an array nor a JSON string of one".into(),
            ))
        }
    };

    let latest = received_at_ms.saturating_add(CREDENTIAL_LIFETIME_MS);
    let mut upload = Upload {
        open_id,
        app_id,
        credentials: Vec::with_capacity(entries.len()),
        rejected: Vec::new(),
        expired: 0,
    };
    for (index, entry) in entries.iter().enumerate() {
        match parse_entry(entry, latest) {
            Ok(expire_ms) if expire_ms <= received_at_ms => upload.expired += 1,
            Ok(expire_ms) => {
                let Some(Value::String(form_id)) = entry.get("formId") else {
                    continue; // parse_entry checked it; kept total for the compiler
                };
                upload.credentials.push(Credential::form_id(
                    form_id.clone(),
                    expire_ms.div_euclid(1000),
                ));
            }
            Err(reason) => upload.rejected.push(RejectedEntry { index, reason }),
        }
    }
    if upload.credentials.is_empty() {
        let detail = upload
            .rejected
            .first()
            .map(|r| format!(" (entry {}: {})", r.index, r.reason))
            .unwrap_or_default();
        return Err(PoisonReason::NoUsableEntry {
            rejected: upload.rejected.len(),
            expired: upload.expired,
            detail,
        });
    }
    Ok(upload)
}

/// Checks one `{"formId", "expire"}` entry; returns its clamped expiry in milliseconds.
fn parse_entry(entry: &Value, latest_ms: i64) -> Result<i64, String> {
    let Value::Object(obj) = entry else {
        return Err("not an object".into());
    };
    match obj.get("formId") {
        Some(Value::String(s)) if s.trim().is_empty() => return Err("formId is empty".into()),
        Some(Value::String(s)) if s == DEVTOOLS_PLACEHOLDER => {
            return Err("formId is the devtools placeholder, not a credential".into())
        }
        Some(Value::String(s)) if s.len() > MAX_FORM_ID_BYTES => {
            return Err(format!(
                "formId is {} bytes, over the limit of {MAX_FORM_ID_BYTES}",
                s.len()
            ))
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            return Err("formId contains a control character".into())
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("formId is not a string".into()),
        None => return Err("formId is missing".into()),
    }
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
    Ok(expire.min(latest_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (
                br#"{"openId":"o","formIds":[{"formId":"the formId is a mock one"}]}"#,
                "no_usable_entry",
            ),
        ];
        for (body, code) in cases {
            let err = parse_upload(body, NOW, UploadLimits::default()).unwrap_err();
            assert_eq!(err.code(), *code, "{}", String::from_utf8_lossy(body));
        }
        let big = vec![b' '; 100];
        let err = parse_upload(&big, NOW, UploadLimits { max_bytes: 99 }).unwrap_err();
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn deep_json_is_refused_not_a_crash() {
        let deep = "[".repeat(100_000);
        let err =
            parse_upload(deep.as_bytes(), NOW, UploadLimits { max_bytes: 1 << 20 }).unwrap_err();
        assert_eq!(err.code(), "not_json");
    }

    proptest::proptest! {
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
