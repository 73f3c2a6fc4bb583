//! wxpush's domain: the names, credentials and message formats every other crate speaks,
//! and the validated configuration.
//!
//! This crate owns *what things are* and the rules for accepting them from outside
//! (upload messages, environment variables). It must not do I/O: no Redis, no RabbitMQ,
//! no HTTP, no reading of the environment except through [`config::RawConfig::from_env`], and
//! of files except the `WXPUSH_CONFIG` file [`config::RawConfig::validate`] reads.

pub mod apps;
mod body;
pub mod campaign;
pub mod config;
pub mod credential;
pub mod job;
pub mod message;
pub mod names;
pub mod quiet;
pub mod reason;
pub mod subscribe_data;
pub mod token_source;
pub mod upload;

pub use apps::{AppConfig, Apps, ConsentSource, FrequencyCap};
pub use campaign::{
    parse_campaign, Audience, Campaign, CampaignError, CampaignKind, CampaignLimits,
    RejectedRecipient, RejectedRecipients,
};
pub use config::{split_urls, Config, ConfigError, QueueType, RawConfig, Secret, SecretUrl};
pub use credential::{
    check_template_id, Consent, Credential, CredentialKind, NEVER_EXPIRES, PREPAY_USES,
};
pub use job::{parse_job, DataItem, JobError, JobKind, SendJob, ValidJob, SINGLE_MARK};
pub use message::{parse_message, MessageError};
pub use names::{AppId, NameError, Namespace, OpenId};
pub use quiet::{AppZone, QuietError, QuietHours, QuietMode, QuietWindow};
pub use reason::{short_reason, MAX_REASON_BYTES};
pub use subscribe_data::{validate_subscribe_data, DataError};
pub use token_source::{ServiceUrl, TokenSource};
pub use upload::{parse_upload, PoisonReason, RejectedEntry, Upload, UploadLimits};

/// WeChat lets a formId (and a prepay_id) be used within 7 days of the user's action.
pub const CREDENTIAL_LIFETIME_MS: i64 = 7 * 24 * 60 * 60 * 1000;
