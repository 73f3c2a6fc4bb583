//! The send job: one message to one user, as the dispatcher publishes it and the senders
//! consume it (queue `<ns>.send`).
//!
//! ```json
//! {"campaignId": "signin-2026-11-28", "openId": "oLvT05Abc", "templateId": "TPL_SIGNIN",
//!  "page": "pages/signin/index", "data": {"keyword1": "Daily check-in"},
//!  "emphasisKeyword": "keyword1.DATA", "attempt": 0}
//! ```
//!
//! `appId` is optional (the install's app when absent); `attempt` (retries so far) is set by
//! the senders when they re-publish a job for a later retry. The credential an attempt holds
//! is kept in the bank's campaign marks, not in the job. This module owns the format and its
//! validation; it must do no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{AppId, NameError, OpenId};

/// Longest accepted campaign id.
pub const MAX_CAMPAIGN_ID_BYTES: usize = 128;

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
    /// `keyword1..N` (or any template field) → value.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emphasis_keyword: Option<String>,
    #[serde(default)]
    pub attempt: u32,
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
}

impl JobError {
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Malformed(_) => "malformed_job",
            JobError::CampaignId(_) => "invalid_campaign_id",
            JobError::OpenId(_) => "invalid_open_id",
            JobError::AppId(_) => "invalid_app_id",
            JobError::EmptyTemplate => "empty_template_id",
        }
    }
}

/// A campaign id is used in Redis key names: printable ASCII without spaces, at most 128
/// bytes, and it always ends the key, so it cannot collide with another key.
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
    let job: SendJob =
        serde_json::from_slice(body).map_err(|e| JobError::Malformed(e.to_string()))?;
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
    Ok(ValidJob {
        job,
        app_id,
        open_id,
    })
}

impl SendJob {
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
        assert_eq!(v.job.data["keyword1"], "Daily check-in");
        assert_eq!(parse_job(&v.job.to_json()).unwrap(), v);
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
}
