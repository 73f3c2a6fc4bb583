//! The credential upload message (contract section 4): parsing and validation.
//!
//! [`parse_upload`] turns raw broker bytes into an [`Upload`] holding the usable credentials,
//! or a [`PoisonReason`] saying why the whole message cannot be used. It decides expiry
//! (clamped to 7 days after receipt, never trusting the client further) and rejects bad
//! entries one by one, so a message with some bad entries still yields the good ones.
//!
//! Hostile input costs at most what its size allows: the body is bounded by
//! [`UploadLimits::max_bytes`] before it is parsed, and the number of `formIds` entries by
//! [`UploadLimits::max_entries`] before any entry is looked at (`too_many_entries`). The
//! openId and appId are validated names ([`crate::names`]); bad ones poison the message.
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

/// Default of [`UploadLimits::max_entries`]: far more than a client collects in 7 days, and
/// ten times the default per-user cap (`WXPUSH_USER_CAP`).
pub const DEFAULT_MAX_UPLOAD_ENTRIES: usize = 1000;

/// Bounds on one upload message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest body accepted, in bytes (`WXPUSH_MAX_MESSAGE_BYTES`, default 64 KiB).
    pub max_bytes: usize,
    /// Most entries accepted in `formIds`, counted before any entry is parsed (so bad and
    /// duplicate entries count too); more poisons the message as `too_many_entries`
    /// (default [`DEFAULT_MAX_UPLOAD_ENTRIES`]).
    pub max_entries: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
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
    #[error("formIds has {len} entries, over the limit of {max}")]
    TooManyEntries { len: usize, max: usize },
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
            PoisonReason::TooManyEntries { .. } => "too_many_entries",
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

    // The seed's client sends `JSON.stringify(formIds)`: that array is parsed here (its cost
    // is bounded by the body's size, like the body's own parse) and borrowed below.
    let from_string: Vec<Value>;
    let entries: &[Value] = match obj.get("formIds") {
        None | Some(Value::Null) => return Err(PoisonReason::MissingFormIds),
        Some(Value::Array(a)) => a,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => {
                from_string = a;
                &from_string
            }
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

    if entries.len() > limits.max_entries {
        return Err(PoisonReason::TooManyEntries {
            len: entries.len(),
            max: limits.max_entries,
        });
    }

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
pub(crate) mod tests {
    use super::*;
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
                "formIds has 1001 entries, over the limit of 1000"
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

    /// What every accepted upload guarantees, whatever the input.
    fn check_accepted(u: &Upload) -> Result<(), TestCaseError> {
        prop_assert!(OpenId::new(u.open_id.as_str()).is_ok());
        prop_assert!(!u.credentials.is_empty());
        for c in &u.credentials {
            prop_assert!(!c.value.trim().is_empty());
            prop_assert!(c.value.len() <= MAX_FORM_ID_BYTES);
            prop_assert!(!c.value.chars().any(char::is_control));
            prop_assert!(c.value != DEVTOOLS_PLACEHOLDER);
            prop_assert!(c.expires_at * 1000 <= NOW + 7 * DAY);
        }
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
            form_id in any::<String>(),
            app_id in proptest::option::of(any::<String>()),
            expire in any::<i64>(),
            as_string in any::<bool>(),
        ) {
            let entries = serde_json::json!([{"formId": form_id, "expire": expire}]);
            let form_ids = if as_string { Value::String(entries.to_string()) } else { entries };
            let mut body = serde_json::json!({"openId": open_id, "formIds": form_ids});
            if let Some(app) = &app_id {
                body["appId"] = Value::String(app.clone());
            }
            match parse(&body.to_string()) {
                Ok(u) => {
                    check_accepted(&u)?;
                    prop_assert_eq!(u.open_id.as_str(), open_id.as_str());
                }
                Err(e) => {
                    if OpenId::new(&open_id).is_err() {
                        prop_assert_eq!(e.code(), "invalid_open_id");
                    }
                }
            }
        }

        #[test]
        fn generated_json_parses_or_says_why(value in json_value(), place in 0usize..4) {
            let body = match place {
                0 => value,
                1 => serde_json::json!({"openId": "o", "formIds": value}),
                2 => serde_json::json!({"openId": value, "formIds": [{"formId": "f"}]}),
                _ => serde_json::json!({"openId": "o", "formIds": [value, {"formId": "f"}]}),
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
