//! The single message (contract 8.2, exchange `<ns>.messages`): one message to one user, sent
//! when it arrives, without a campaign.
//!
//! ```json
//! {"messageId": "order-1001-shipped", "openId": "oA", "kind": "subscribe",
//!  "templateId": "TPL_ORDER_SHIPPED", "data": {"thing1": {"value": "Order 1001 shipped"}},
//!  "page": "pages/order/detail?id=1001", "miniprogramState": "formal", "lang": "zh_CN",
//!  "appId": "wx1234567890abcdef"}
//! ```
//!
//! A single message is read as a campaign of one ([`parse_campaign`]): the same fields, the same
//! checks and error codes (`invalid_data`, `invalid_template_id`, ...), so a message WeChat
//! would refuse for its data is refused here, once. What differs: `messageId` (the idempotency
//! key, named like a campaign id) instead of `campaignId`, `openId` instead of an audience, and
//! `kind` is required. The send job made from it ([`SendJob::single`]) carries
//! `"single": true` and asks for receipts (8.3).
//!
//! This module owns the format and its validation; it does no I/O and never panics.

use serde_json::{Map, Value};

use crate::body::raw_object;
use crate::campaign::{parse_campaign, Audience, CampaignError, CampaignLimits};
use crate::job::{check_campaign_id, SendJob, ValidJob};
use crate::names::OpenId;

/// Largest single message accepted: one recipient's data (32 KiB as sent, more as JSON text)
/// and a few names.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Why a single message cannot be sent. It goes to `<ns>.dead.messages` with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("messageId is missing")]
    MissingMessageId,
    #[error("messageId is invalid: {0}")]
    InvalidMessageId(String),
    #[error("openId is missing")]
    MissingOpenId,
    #[error("openId is invalid: {0}")]
    InvalidOpenId(String),
    #[error("kind is missing: \"template\" or \"subscribe\"")]
    MissingKind,
    /// What a campaign of one with the message's fields was refused for.
    #[error("{0}")]
    Campaign(CampaignError),
}

impl MessageError {
    /// A short stable code for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::MissingMessageId => "missing_message_id",
            MessageError::InvalidMessageId(_) => "invalid_message_id",
            MessageError::MissingOpenId => "missing_open_id",
            MessageError::InvalidOpenId(_) => "invalid_open_id",
            MessageError::MissingKind => "missing_kind",
            MessageError::Campaign(e) => e.code(),
        }
    }
}

/// Parses and validates one single message into the first attempt of its send job.
pub fn parse_message(body: &[u8]) -> Result<ValidJob, MessageError> {
    let raw = raw_object(body, MAX_MESSAGE_BYTES)
        .map_err(|e| MessageError::Campaign(CampaignError::from(e)))?;
    let text =
        |key: &str| -> Option<&str> { raw.get(key).map(|r| r.get()).filter(|t| *t != "null") };
    let message_id: String = match text("messageId") {
        None => return Err(MessageError::MissingMessageId),
        Some(t) => serde_json::from_str(t)
            .map_err(|_| MessageError::InvalidMessageId("not a string".into()))?,
    };
    check_campaign_id(&message_id).map_err(|e| {
        MessageError::InvalidMessageId(e.to_string().replace("campaignId", "messageId"))
    })?;
    let open_id: String = match text("openId") {
        None => return Err(MessageError::MissingOpenId),
        Some(t) => serde_json::from_str(t)
            .map_err(|_| MessageError::InvalidOpenId("not a string".into()))?,
    };
    let open_id = OpenId::new(&open_id).map_err(|e| MessageError::InvalidOpenId(e.to_string()))?;
    if text("kind").is_none() {
        return Err(MessageError::MissingKind);
    }
    // The campaign of one: the message's own fields, its id as the campaign's, its user as
    // the audience. (`campaignId`, `audience` and `sendAt` of the message, if any, are not
    // read: a single message is sent when it arrives, never scheduled.)
    let mut campaign: Map<String, Value> = Map::new();
    for (key, value) in &raw {
        if matches!(
            key.as_str(),
            "messageId" | "openId" | "campaignId" | "audience" | "sendAt"
        ) {
            continue;
        }
        campaign.insert(
            key.clone(),
            serde_json::from_str(value.get())
                .map_err(|e| MessageError::Campaign(CampaignError::NotJson(e.to_string())))?,
        );
    }
    campaign.insert("campaignId".into(), Value::String(message_id));
    campaign.insert(
        "audience".into(),
        serde_json::json!({"openIds": [open_id.as_str()]}),
    );
    let body = serde_json::to_vec(&campaign)
        .map_err(|e| MessageError::Campaign(CampaignError::NotJson(e.to_string())))?;
    let limits = CampaignLimits {
        max_bytes: MAX_MESSAGE_BYTES * 2,
        max_recipients: 1,
    };
    let c = parse_campaign(&body, limits).map_err(MessageError::Campaign)?;
    if !matches!(c.audience, Audience::OpenIds(_)) {
        return Err(MessageError::InvalidOpenId("not one user".into()));
    }
    let mut job = c.job_for_user(&open_id);
    job.single = true;
    job.receipts = true;
    Ok(ValidJob {
        app_id: c.app_id,
        open_id,
        job,
    })
}

impl SendJob {
    /// Whether the job is a single message's (contract 8.2): its `campaignId` is the messageId.
    pub fn is_single(&self) -> bool {
        self.single
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobKind;

    #[test]
    fn the_section_8_2_example_is_a_subscribe_job_for_its_user() {
        let body = br#"{"messageId": "order-1001-shipped", "openId": "oA", "kind": "subscribe",
            "templateId": "TPL_ORDER_SHIPPED", "data": {"thing1": {"value": "Order 1001 shipped"}},
            "page": "pages/order/detail?id=1001", "miniprogramState": "formal", "lang": "zh_CN",
            "appId": "wx1234567890abcdef"}"#;
        let v = parse_message(body).unwrap();
        assert_eq!(v.open_id.as_str(), "oA");
        assert_eq!(
            v.app_id.as_ref().map(|a| a.as_str()),
            Some("wx1234567890abcdef")
        );
        let j = &v.job;
        assert!(j.single && j.receipts);
        assert_eq!(j.campaign_id, "order-1001-shipped");
        assert_eq!(j.kind, JobKind::Subscribe);
        assert_eq!(j.data["thing1"].value, "Order 1001 shipped");
        assert_eq!(j.page.as_deref(), Some("pages/order/detail?id=1001"));
        assert_eq!(j.miniprogram_state.as_deref(), Some("formal"));
        // The job travels like any other and comes back the same.
        let again = crate::parse_job(&j.to_json()).unwrap();
        assert_eq!(&again.job, j);
    }

    #[test]
    fn a_single_message_is_never_scheduled_and_its_send_at_is_not_read() {
        let with = |send_at: &str| {
            parse_message(
                format!(
                    r#"{{"messageId": "m1", "openId": "oA", "kind": "template",
                    "templateId": "T", "keywords": "a", "sendAt": {send_at}}}"#
                )
                .as_bytes(),
            )
        };
        let plain = parse_message(
            br#"{"messageId": "m1", "openId": "oA", "kind": "template", "templateId": "T",
                "keywords": "a"}"#,
        )
        .unwrap();
        for s in ["1764950400000", "\"tomorrow\"", "-1"] {
            assert_eq!(with(s).unwrap().job, plain.job, "{s}");
        }
    }

    #[test]
    fn a_template_message_takes_keywords() {
        let v = parse_message(
            br#"{"messageId": "m1", "openId": "oB", "kind": "template", "templateId": "T",
                 "keywords": ["a", "b"]}"#,
        )
        .unwrap();
        assert_eq!(v.job.kind, JobKind::Template);
        assert_eq!(v.job.data["keyword2"].value, "b");
    }

    #[test]
    fn bad_messages_say_why() {
        let cases: [(&str, &str); 10] = [
            (
                r#"{"openId": "o", "kind": "template", "templateId": "T"}"#,
                "missing_message_id",
            ),
            (
                r#"{"messageId": "has space", "openId": "o", "kind": "template", "templateId": "T"}"#,
                "invalid_message_id",
            ),
            (
                r#"{"messageId": 5, "openId": "o", "kind": "template", "templateId": "T"}"#,
                "invalid_message_id",
            ),
            (
                r#"{"messageId": "m", "kind": "template", "templateId": "T"}"#,
                "missing_open_id",
            ),
            (
                r#"{"messageId": "m", "openId": "", "kind": "template", "templateId": "T"}"#,
                "invalid_open_id",
            ),
            (
                r#"{"messageId": "m", "openId": "o", "templateId": "T"}"#,
                "missing_kind",
            ),
            (
                r#"{"messageId": "m", "openId": "o", "kind": "sms", "templateId": "T"}"#,
                "invalid_kind",
            ),
            (
                r#"{"messageId": "m", "openId": "o", "kind": "subscribe", "templateId": "TPL_A"}"#,
                "invalid_data",
            ),
            (
                r#"{"messageId": "m", "openId": "o", "kind": "subscribe", "templateId": "TPL_A", "data": {"thing1": "xxxxxxxxxxxxxxxxxxxxxxxxx"}}"#,
                "invalid_data",
            ),
            (r#"[1]"#, "not_object"),
        ];
        for (body, code) in cases {
            assert_eq!(
                parse_message(body.as_bytes()).unwrap_err().code(),
                code,
                "{body}"
            );
        }
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(parse_message(&big).unwrap_err().code(), "too_large");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_message(&body);
        }

        #[test]
        fn never_panics_on_messages_with_any_strings(
            id in ".{0,40}", who in ".{0,40}", kind in "(template|subscribe|x)",
            tpl in ".{0,20}", value in ".{0,40}",
        ) {
            let body = serde_json::json!({"messageId": id, "openId": who, "kind": kind,
                "templateId": tpl, "data": {"thing1": {"value": value}}});
            let _ = parse_message(body.to_string().as_bytes());
        }
    }

    #[test]
    fn a_message_ignores_quiet_hours_unless_it_says_defer() {
        let body = |q: &str| {
            format!(
                r#"{{"messageId":"m1","openId":"oUser1","kind":"template","templateId":"TPL",
                    "keywords":"x"{q}}}"#
            )
        };
        let plain = parse_message(body("").as_bytes()).unwrap().job;
        assert_eq!(plain.quiet_mode(), crate::QuietMode::Ignore);
        let deferred = parse_message(body(r#","quietHours":"defer""#).as_bytes())
            .unwrap()
            .job;
        assert_eq!(deferred.quiet_mode(), crate::QuietMode::Defer);
    }
}
