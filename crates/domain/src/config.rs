//! Configuration (contract section 2): the raw strings as given, and the validated [`Config`].
//!
//! [`RawConfig`] is what the environment (or command-line flags) said; [`RawConfig::validate`]
//! turns it into a [`Config`] or one readable [`ConfigError`] naming the variable at fault.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show them, and the two
//! service URLs in [`SecretUrl`], whose `Debug` and `Display` show only [`redact_url`]'s form
//! (scheme, host, port, path: never the userinfo, never the query). Every configuration type
//! here may be printed with `{:?}` without showing a secret.
//! The apps an install serves come from the single-app variables and the `WXPUSH_CONFIG` file,
//! which [`RawConfig::validate`] reads ([`crate::apps`] says how the two meet).
//! This module must not connect to anything; checking that a URL is reachable is the roles'.

use std::collections::HashMap;
use std::fmt;

use crate::apps::{
    Apps, VarApp, CAP_SINGLES_VAR, CAP_VAR, CONFIG_FILE_VAR, CONSENT_SOURCE_VAR,
    ENCODING_AES_KEY_VAR, PUSH_TOKEN_VAR, QUIET_HOURS_VAR, TIMEZONE_VAR, TOKEN_SOURCE_VAR,
};
use crate::names::Namespace;
use crate::upload::UploadLimits;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_NAMESPACE: &str = "wxpush";
pub const DEFAULT_WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
pub const DEFAULT_SEND_RATE: u32 = 500;
pub const DEFAULT_CLAIM_MARGIN_SECS: u32 = 60;
pub const DEFAULT_USER_CAP: u32 = 100;
/// Most subscribe consents one user holds for one template (WeChat stacks them without a
/// limit; a replayed upload would too).
pub const DEFAULT_CONSENTS_PER_TEMPLATE: u32 = 50;
/// Most templates one user holds subscribe consents for.
pub const DEFAULT_TEMPLATES_PER_USER: u32 = 100;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const DEFAULT_INGEST_PREFETCH: u16 = 2000;
pub const DEFAULT_INGEST_BATCH: usize = 500;
/// Most bytes of uploads one ingest process holds at once (prefetched and being parsed):
/// 128 MiB, so that with the default 64 KiB uploads the default prefetch of 2,000 stands (a
/// lower one costs throughput on small uploads) and the whole role stays well within 256 MiB.
pub const DEFAULT_INGEST_BUFFER_BYTES: usize = 128 * 1024 * 1024;
pub const DEFAULT_SEND_CONCURRENCY: usize = 64;
/// How long a send job's failed attempts are retried, from the first failure: 6 hours, so an
/// outage of WeChat (or of a gateway in front of it) of that long loses nobody.
pub const DEFAULT_SEND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// The longest wait between two attempts of a send job: 15 minutes.
pub const DEFAULT_SEND_RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(900);
/// The longest retry budget: a credential lives at most 7 days, and a campaign's marks keep a
/// recipient's outcome 8 days, so a job still retrying later could no longer be told from a
/// duplicate of one already settled.
pub const MAX_SEND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// The longest wait between retries: the longest delay queue (1 hour).
pub const MAX_SEND_RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);
pub const DEFAULT_QUOTA_COOLDOWN_SECS: u64 = 3600;
pub const DEFAULT_DISPATCH_PAGE_SIZE: usize = 1000;
/// Where `/healthz`, `/readyz` and `/metrics` are served (port 9464, Prometheus exporters').
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9464";
/// Ports tried in order when the default address is taken (several roles on one host):
/// 9464 to 9479, then one the system picks.
pub const DEFAULT_HTTP_PORTS: u16 = 16;
pub const DEFAULT_SHUTDOWN_SECS: u64 = 10;
/// Most replicas `WXPUSH_REDIS_WAIT_REPLICAS` may ask for: more is a typo, not a topology.
pub const MAX_REDIS_WAIT_REPLICAS: u32 = 16;

/// A secret string (the app secret). Printing it shows `***`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that must send it (the token request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A service URL that may hold a password (`WXPUSH_AMQP_URL`, `WXPUSH_REDIS_URL`), or several
/// separated by commas (a cluster's nodes, [`split_urls`]). Printing it shows [`redact_url`]'s
/// form of each; [`SecretUrl::expose`] gives the URL itself to the one place that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    /// The URL as given, password included: only for the client that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// What an operator may see: scheme, host, port and path ([`redact_url`]) of each URL.
    pub fn redacted(&self) -> String {
        split_urls(&self.0)
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }
    /// The passwords, as written in the URLs (percent-encoded or not).
    pub fn passwords(&self) -> Vec<Secret> {
        split_urls(&self.0)
            .into_iter()
            .filter_map(url_password)
            .map(Secret::new)
            .collect()
    }
    /// Each URL of the list (one for a single node).
    pub fn urls(&self) -> Vec<&str> {
        split_urls(&self.0)
    }
    /// `text` with every URL of the list, and every form of their passwords, masked
    /// ([`scrub_url`] for each).
    pub fn scrub(&self, text: &str) -> String {
        self.urls()
            .into_iter()
            .fold(text.to_owned(), |text, url| scrub_url(&text, url))
    }
}

/// The URLs of a comma-separated list: split at each comma that a URL's scheme (`name://`)
/// follows, so that a comma inside a password (allowed unencoded in a URL's userinfo) stays
/// where it is. One URL gives itself.
pub fn split_urls(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        if split_scheme(list[i + 1..].trim_start()).0.is_some() {
            out.push(&list[start..i]);
            start = i + 1;
        }
    }
    out.push(&list[start..]);
    // A stray comma at the end (`a,b,`) or doubled (`a,,b`) is no node.
    let mut out: Vec<&str> = out
        .into_iter()
        .map(|u| u.trim().trim_end_matches(',').trim())
        .filter(|u| !u.is_empty())
        .collect();
    if out.is_empty() {
        out.push("");
    }
    out
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A configuration value that cannot be used. The message names the variable, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Configuration as given, every value an unparsed string (`None` where not set); the secrets
/// already in the types that never print them.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub amqp_url: Option<SecretUrl>,
    pub redis_url: Option<SecretUrl>,
    pub namespace: Option<String>,
    pub wechat_api_base: Option<String>,
    pub app_id: Option<String>,
    pub app_secret: Option<Secret>,
    pub send_rate: Option<String>,
    pub claim_margin_secs: Option<String>,
    pub user_cap: Option<String>,
    pub consents_per_template: Option<String>,
    pub templates_per_user: Option<String>,
    pub max_message_bytes: Option<String>,
    pub ingest_prefetch: Option<String>,
    pub ingest_batch: Option<String>,
    pub ingest_buffer_bytes: Option<String>,
    pub send_concurrency: Option<String>,
    pub send_max_attempts: Option<String>,
    pub send_retry_for: Option<String>,
    pub send_retry_max_delay: Option<String>,
    pub quota_cooldown_secs: Option<String>,
    pub dispatch_page_size: Option<String>,
    pub http_addr: Option<String>,
    pub shutdown_secs: Option<String>,
    pub tls_ca_file: Option<String>,
    /// Path of the several-apps TOML file.
    pub config_file: Option<String>,
    /// Where the single app's access token comes from (`stable`, `classic` or a URL).
    pub token_source: Option<String>,
    pub redis_wait_replicas: Option<String>,
    pub redis_allow_eviction: Option<String>,
    pub queue_type: Option<String>,
    /// The single app's message push Token (contract §8.4).
    pub push_token: Option<Secret>,
    /// The single app's message push EncodingAESKey.
    pub encoding_aes_key: Option<Secret>,
    /// The single app's consent source, unparsed.
    pub consent_source: Option<String>,
    /// Where `wxpush events` listens, unparsed.
    pub events_addr: Option<String>,
    /// The single app's quiet hours (`22:00-08:00`), unparsed (contract §8.5).
    pub quiet_hours: Option<String>,
    /// The single app's time zone (`Asia/Shanghai`), unparsed.
    pub timezone: Option<String>,
    /// Over how many seconds after a quiet window's end its deferred jobs are released.
    pub quiet_spread_secs: Option<String>,
    /// The frequency cap of every app that states none, unparsed.
    pub cap: Option<String>,
    /// Whether single messages count toward it, unparsed.
    pub cap_singles: Option<String>,
}

/// Every variable [`RawConfig::from_env`] reads, beside the field it fills.
pub const ENV_VARS: &[&str] = &[
    "WXPUSH_AMQP_URL",
    "WXPUSH_REDIS_URL",
    "WXPUSH_NAMESPACE",
    "WXPUSH_WECHAT_API_BASE",
    "WXPUSH_APP_ID",
    "WXPUSH_APP_SECRET",
    "WXPUSH_SEND_RATE",
    "WXPUSH_CLAIM_MARGIN_SECS",
    "WXPUSH_USER_CAP",
    "WXPUSH_MAX_MESSAGE_BYTES",
    "WXPUSH_INGEST_PREFETCH",
    "WXPUSH_INGEST_BATCH",
    "WXPUSH_SEND_CONCURRENCY",
    "WXPUSH_SEND_MAX_ATTEMPTS",
    "WXPUSH_QUOTA_COOLDOWN_SECS",
    "WXPUSH_DISPATCH_PAGE_SIZE",
    "WXPUSH_HTTP_ADDR",
    "WXPUSH_SHUTDOWN_SECS",
    "WXPUSH_TLS_CA_FILE",
    CONFIG_FILE_VAR,
    "WXPUSH_INGEST_BUFFER_BYTES",
    TOKEN_SOURCE_VAR,
    "WXPUSH_SEND_RETRY_FOR",
    "WXPUSH_SEND_RETRY_MAX_DELAY",
    "WXPUSH_CONSENTS_PER_TEMPLATE",
    "WXPUSH_TEMPLATES_PER_USER",
    "WXPUSH_REDIS_WAIT_REPLICAS",
    "WXPUSH_REDIS_ALLOW_EVICTION",
    "WXPUSH_QUEUE_TYPE",
    PUSH_TOKEN_VAR,
    ENCODING_AES_KEY_VAR,
    CONSENT_SOURCE_VAR,
    EVENTS_ADDR_VAR,
    CAP_VAR,
    CAP_SINGLES_VAR,
    QUIET_HOURS_VAR,
    TIMEZONE_VAR,
    QUIET_SPREAD_VAR,
];

/// Where `wxpush events` listens (contract §8.4).
pub const EVENTS_ADDR_VAR: &str = "WXPUSH_EVENTS_ADDR";

/// Over how many seconds after a quiet window's end its deferred jobs are released (§8.5).
pub const QUIET_SPREAD_VAR: &str = "WXPUSH_QUIET_SPREAD_SECS";

/// The release spread unless `WXPUSH_QUIET_SPREAD_SECS` says otherwise.
pub const DEFAULT_QUIET_SPREAD: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest release spread: deferred messages start going out within a minute of the
/// window's end (contract §8.5).
pub const MAX_QUIET_SPREAD: std::time::Duration = std::time::Duration::from_secs(60);

/// `wxpush events`'s address unless `WXPUSH_EVENTS_ADDR` says otherwise.
pub const DEFAULT_EVENTS_ADDR: &str = "0.0.0.0:8090";

impl RawConfig {
    /// Reads the `WXPUSH_*` variables of the process environment.
    pub fn from_env() -> Self {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the `WXPUSH_*` variables from a map (the environment, or a test's).
    pub fn from_map(vars: &HashMap<String, String>) -> Self {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        Self {
            amqp_url: get(ENV_VARS[0]).map(SecretUrl::new),
            redis_url: get(ENV_VARS[1]).map(SecretUrl::new),
            namespace: get(ENV_VARS[2]),
            wechat_api_base: get(ENV_VARS[3]),
            app_id: get(ENV_VARS[4]),
            app_secret: get(ENV_VARS[5]).map(Secret::new),
            send_rate: get(ENV_VARS[6]),
            claim_margin_secs: get(ENV_VARS[7]),
            user_cap: get(ENV_VARS[8]),
            max_message_bytes: get(ENV_VARS[9]),
            ingest_prefetch: get(ENV_VARS[10]),
            ingest_batch: get(ENV_VARS[11]),
            send_concurrency: get(ENV_VARS[12]),
            send_max_attempts: get(ENV_VARS[13]),
            quota_cooldown_secs: get(ENV_VARS[14]),
            dispatch_page_size: get(ENV_VARS[15]),
            http_addr: get(ENV_VARS[16]),
            shutdown_secs: get(ENV_VARS[17]),
            tls_ca_file: get(ENV_VARS[18]),
            config_file: get(ENV_VARS[19]),
            ingest_buffer_bytes: get(ENV_VARS[20]),
            token_source: get(ENV_VARS[21]),
            send_retry_for: get(ENV_VARS[22]),
            send_retry_max_delay: get(ENV_VARS[23]),
            consents_per_template: get(ENV_VARS[24]),
            templates_per_user: get(ENV_VARS[25]),
            redis_wait_replicas: get(ENV_VARS[26]),
            redis_allow_eviction: get(ENV_VARS[27]),
            queue_type: get(ENV_VARS[28]),
            push_token: get(ENV_VARS[29]).map(Secret::new),
            encoding_aes_key: get(ENV_VARS[30]).map(Secret::new),
            consent_source: get(ENV_VARS[31]),
            events_addr: get(ENV_VARS[32]),
            cap: get(ENV_VARS[33]),
            cap_singles: get(ENV_VARS[34]),
            quiet_hours: get(ENV_VARS[35]),
            timezone: get(ENV_VARS[36]),
            quiet_spread_secs: get(ENV_VARS[37]),
        }
    }

    /// Every secret this configuration holds, for the log scrubber: the app secret, the
    /// passwords of the two URLs as written in them, and every secret in the `WXPUSH_CONFIG`
    /// file, read leniently ([`crate::apps::file_secrets`]) so that a file that does not
    /// validate still gives its secrets away to the scrubber and nowhere else. A file that
    /// cannot be read gives none (validation then fails without quoting it).
    pub fn secrets(&self) -> Vec<Secret> {
        let mut out: Vec<Secret> = self.app_secret.iter().cloned().collect();
        out.extend(self.push_token.iter().cloned());
        out.extend(self.encoding_aes_key.iter().cloned());
        out.extend(
            [&self.amqp_url, &self.redis_url]
                .into_iter()
                .flatten()
                .flat_map(SecretUrl::passwords),
        );
        if let Some(text) = self
            .config_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            out.extend(crate::apps::file_secrets(&text));
        }
        out
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let amqp_url = url(
            "WXPUSH_AMQP_URL",
            self.amqp_url.map(|u| u.0),
            DEFAULT_AMQP_URL,
            &["amqp", "amqps"],
        )
        .map(SecretUrl)?;
        let redis_url = url(
            "WXPUSH_REDIS_URL",
            self.redis_url.map(|u| u.0),
            DEFAULT_REDIS_URL,
            &["redis", "rediss", "redis+unix", "unix"],
        )
        .map(SecretUrl)?;
        if redis_url.urls().len() > 1
            && redis_url
                .urls()
                .iter()
                .any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(ConfigError::Invalid {
                var: "WXPUSH_REDIS_URL",
                reason: format!(
                    "'{}' lists several nodes (a Redis Cluster's seed nodes), and those are \
                     redis:// or rediss:// addresses, not sockets",
                    redis_url.redacted()
                ),
            });
        }
        let wechat_api_base = url(
            "WXPUSH_WECHAT_API_BASE",
            self.wechat_api_base,
            DEFAULT_WECHAT_API_BASE,
            &["http", "https"],
        )?;
        let namespace = Namespace::new(self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE))
            .map_err(|e| ConfigError::Invalid {
                var: "WXPUSH_NAMESPACE",
                reason: e.to_string(),
            })?;
        let send_rate = number("WXPUSH_SEND_RATE", self.send_rate, DEFAULT_SEND_RATE, 1)?;
        let file = match &self.config_file {
            None => None,
            Some(path) => Some((
                path.as_str(),
                std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    var: CONFIG_FILE_VAR,
                    reason: format!("cannot read {path}: {e}"),
                })?,
            )),
        };
        let apps = Apps::build(
            VarApp {
                id: self.app_id,
                secret: self.app_secret,
                token_source: self.token_source,
                push_token: self.push_token,
                encoding_aes_key: self.encoding_aes_key,
                consent_source: self.consent_source,
                quiet_hours: self.quiet_hours,
                timezone: self.timezone,
                cap: self
                    .cap
                    .map(|c| number(CAP_VAR, Some(c), 1u32, 1u32))
                    .transpose()?,
                cap_singles: self
                    .cap_singles
                    .map(|c| flag(CAP_SINGLES_VAR, Some(&c)))
                    .transpose()?,
            },
            file.as_ref().map(|(p, t)| (*p, t.as_str())),
            send_rate,
        )?;
        let http_addr = http_addr(self.http_addr)?;
        let quiet_spread = match self.quiet_spread_secs {
            None => DEFAULT_QUIET_SPREAD,
            Some(s) => match s.trim().parse::<u64>() {
                Ok(n) if n <= MAX_QUIET_SPREAD.as_secs() => std::time::Duration::from_secs(n),
                _ => {
                    return Err(ConfigError::Invalid {
                        var: QUIET_SPREAD_VAR,
                        reason: format!(
                            "'{s}' is not a whole number of seconds from 0 to {} (deferred \
                             messages start going out within a minute of the window's end)",
                            MAX_QUIET_SPREAD.as_secs()
                        ),
                    })
                }
            },
        };
        let events_addr = {
            let given = self.events_addr.as_deref().map(str::trim);
            given
                .unwrap_or(DEFAULT_EVENTS_ADDR)
                .parse::<std::net::SocketAddr>()
                .map_err(|_| ConfigError::Invalid {
                    var: EVENTS_ADDR_VAR,
                    reason: format!(
                        "'{}' is not an address and port (like {DEFAULT_EVENTS_ADDR})",
                        given.unwrap_or_default()
                    ),
                })?
        };
        let user_cap = number("WXPUSH_USER_CAP", self.user_cap, DEFAULT_USER_CAP, 1)?;
        let tls_ca_file = self.tls_ca_file.map(std::path::PathBuf::from);
        let redis_wait_replicas =
            number("WXPUSH_REDIS_WAIT_REPLICAS", self.redis_wait_replicas, 0, 0)?;
        if redis_wait_replicas > MAX_REDIS_WAIT_REPLICAS {
            return Err(ConfigError::Invalid {
                var: "WXPUSH_REDIS_WAIT_REPLICAS",
                reason: format!(
                    "'{redis_wait_replicas}' is above the maximum of {MAX_REDIS_WAIT_REPLICAS}"
                ),
            });
        }
        let redis_allow_eviction = flag(
            "WXPUSH_REDIS_ALLOW_EVICTION",
            self.redis_allow_eviction.as_deref(),
        )?;
        let queue_type = match self.queue_type.as_deref().map(str::trim) {
            None | Some("quorum") => QueueType::Quorum,
            Some("classic") => QueueType::Classic,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "WXPUSH_QUEUE_TYPE",
                    reason: format!("'{other}' is not quorum or classic"),
                })
            }
        };
        Ok(Config {
            events_addr,
            quiet_spread,
            queue_type,
            redis_wait_replicas,
            redis_allow_eviction,
            http_addr,
            tls_ca_file,
            shutdown_grace: std::time::Duration::from_secs(number(
                "WXPUSH_SHUTDOWN_SECS",
                self.shutdown_secs,
                DEFAULT_SHUTDOWN_SECS,
                1,
            )?),
            amqp_url,
            redis_url,
            namespace,
            wechat_api_base,
            apps,
            send_rate,
            claim_margin_secs: number(
                "WXPUSH_CLAIM_MARGIN_SECS",
                self.claim_margin_secs,
                DEFAULT_CLAIM_MARGIN_SECS,
                0,
            )?,
            user_cap,
            consents_per_template: number(
                "WXPUSH_CONSENTS_PER_TEMPLATE",
                self.consents_per_template,
                DEFAULT_CONSENTS_PER_TEMPLATE,
                1,
            )?,
            templates_per_user: number(
                "WXPUSH_TEMPLATES_PER_USER",
                self.templates_per_user,
                DEFAULT_TEMPLATES_PER_USER,
                1,
            )?,
            upload_limits: UploadLimits {
                max_kept: user_cap as usize,
                max_bytes: number(
                    "WXPUSH_MAX_MESSAGE_BYTES",
                    self.max_message_bytes,
                    DEFAULT_MAX_MESSAGE_BYTES,
                    64,
                )?,
                ..UploadLimits::default()
            },
            ingest_prefetch: number(
                "WXPUSH_INGEST_PREFETCH",
                self.ingest_prefetch,
                DEFAULT_INGEST_PREFETCH,
                1,
            )?,
            ingest_batch: number(
                "WXPUSH_INGEST_BATCH",
                self.ingest_batch,
                DEFAULT_INGEST_BATCH,
                1,
            )?,
            ingest_buffer_bytes: number(
                "WXPUSH_INGEST_BUFFER_BYTES",
                self.ingest_buffer_bytes,
                DEFAULT_INGEST_BUFFER_BYTES,
                1,
            )?,
            send_concurrency: number(
                "WXPUSH_SEND_CONCURRENCY",
                self.send_concurrency,
                DEFAULT_SEND_CONCURRENCY,
                1,
            )?,
            send_max_attempts: self
                .send_max_attempts
                .map(|v| number("WXPUSH_SEND_MAX_ATTEMPTS", Some(v), 1, 1))
                .transpose()?,
            send_retry_for: duration(
                "WXPUSH_SEND_RETRY_FOR",
                self.send_retry_for,
                DEFAULT_SEND_RETRY_FOR,
                MAX_SEND_RETRY_FOR,
            )?,
            send_retry_max_delay: duration(
                "WXPUSH_SEND_RETRY_MAX_DELAY",
                self.send_retry_max_delay,
                DEFAULT_SEND_RETRY_MAX_DELAY,
                MAX_SEND_RETRY_MAX_DELAY,
            )?,
            quota_cooldown_secs: number(
                "WXPUSH_QUOTA_COOLDOWN_SECS",
                self.quota_cooldown_secs,
                DEFAULT_QUOTA_COOLDOWN_SECS,
                1,
            )?,
            dispatch_page_size: number(
                "WXPUSH_DISPATCH_PAGE_SIZE",
                self.dispatch_page_size,
                DEFAULT_DISPATCH_PAGE_SIZE,
                1,
            )?,
        })
    }
}

/// Validated configuration shared by every role. Its `Debug` shows no secret: the URLs are
/// [`SecretUrl`]s and the app secrets [`Secret`]s.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp_url: SecretUrl,
    pub redis_url: SecretUrl,
    pub namespace: Namespace,
    pub wechat_api_base: String,
    /// The mini programs served, the default first, each with its secret and send rate.
    pub apps: Apps,
    /// `WXPUSH_SEND_RATE`: fleet-wide WeChat send calls per second of every app that states
    /// no rate of its own.
    pub send_rate: u32,
    /// A credential expiring within this many seconds counts as expired.
    pub claim_margin_secs: u32,
    /// Most usable credentials kept per user (those expiring last are kept).
    pub user_cap: u32,
    /// Most subscribe consents one user holds for one template (more are refused).
    pub consents_per_template: u32,
    /// Most templates one user holds subscribe consents for (a consent for another template
    /// is refused).
    pub templates_per_user: u32,
    pub upload_limits: UploadLimits,
    /// Unacknowledged uploads one ingest process may hold.
    pub ingest_prefetch: u16,
    /// Most uploads written to Redis in one round trip.
    pub ingest_batch: usize,
    /// Most bytes of uploads one ingest process holds: the prefetch is cut so that that many
    /// uploads of the largest size allowed fit, and a batch holds at most half of it.
    pub ingest_buffer_bytes: usize,
    /// Send jobs one sender process handles at once.
    pub send_concurrency: usize,
    /// Most attempts before a send job is given up, if set (by default only the time
    /// budget, `send_retry_for`, bounds them).
    pub send_max_attempts: Option<u32>,
    /// How long a send job's failed attempts are retried, from the first failure.
    pub send_retry_for: std::time::Duration,
    /// The longest wait between two attempts of a send job.
    pub send_retry_max_delay: std::time::Duration,
    /// How long the fleet pauses after WeChat's daily quota answer (45009).
    pub quota_cooldown_secs: u64,
    /// Recipients the dispatcher publishes per page (one checkpoint per page).
    pub dispatch_page_size: usize,
    /// Where the health and metrics endpoints listen (`None`: `WXPUSH_HTTP_ADDR=off`; port 0
    /// picks a free port).
    pub http_addr: Option<HttpAddr>,
    /// How long a stopping role may take to finish or hand back its work before it exits.
    pub shutdown_grace: std::time::Duration,
    /// CA certificates (PEM) to trust for `amqps://` (beside the system's store) and
    /// `rediss://` (instead of it: the redis crate replaces its roots), see docs/tls.md.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Replicas that must acknowledge an upload's store and a recipient's settled outcome
    /// (Redis `WAIT`) before the message is acknowledged to RabbitMQ; 0: none asked.
    pub redis_wait_replicas: u32,
    /// Start even when Redis's `maxmemory-policy` evicts keys (every bank key has a TTL, so
    /// any policy but `noeviction` can drop credentials and campaign marks).
    pub redis_allow_eviction: bool,
    /// The type of every queue wxpush declares (`WXPUSH_QUEUE_TYPE`).
    pub queue_type: QueueType,
    /// Where `wxpush events` listens (`WXPUSH_EVENTS_ADDR`, contract §8.4).
    pub events_addr: std::net::SocketAddr,
    /// Jobs deferred for quiet hours come back over this long after the window's end, each
    /// user at its own offset (`WXPUSH_QUIET_SPREAD_SECS`, contract §8.5).
    pub quiet_spread: std::time::Duration,
}

/// The RabbitMQ queue type of every queue an install declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated (Raft) queues, RabbitMQ's choice for data safety: the default.
    #[default]
    Quorum,
    /// Single-node queues, for an install whose queues were declared classic by an older
    /// wxpush (or a broker older than 3.10).
    Classic,
}

impl QueueType {
    /// The other type (what an install's existing queues are when they are not this one).
    pub fn other(self) -> Self {
        match self {
            QueueType::Quorum => QueueType::Classic,
            QueueType::Classic => QueueType::Quorum,
        }
    }

    /// The value of `x-queue-type` (and of `WXPUSH_QUEUE_TYPE`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Where a role serves its health and metrics endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr {
    pub addr: std::net::SocketAddr,
    /// True when `WXPUSH_HTTP_ADDR` was not set: several roles of one install may run on one
    /// host with every optional variable unset, so a taken default port is not an error (the
    /// role tries the next of [`DEFAULT_HTTP_PORTS`] ports, then any free one). An address the
    /// operator gave is used as it is, or the role does not start.
    pub is_default: bool,
}

impl Config {
    /// Every secret the install runs with, for the log scrubber: each app's secret, the
    /// passwords of the two URLs (as written in them) and what may be a key in a token
    /// service's URL.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut out: Vec<Secret> = self
            .apps
            .iter()
            .flat_map(|a| [&a.secret, &a.push_token, &a.encoding_aes_key])
            .flatten()
            .cloned()
            .collect();
        out.extend(self.amqp_url.passwords());
        out.extend(self.redis_url.passwords());
        // A token service's URL may carry a key (its password or query).
        for app in self.apps.iter() {
            if let crate::TokenSource::Service(url) = &app.token_source {
                out.extend(url.secret_parts().into_iter().map(Secret::new));
            }
        }
        out
    }
}

/// `url` as an operator may see it: scheme, host, port and path (the vhost or database),
/// never the userinfo (user name and password) and never the query or fragment (Redis URLs
/// may carry `?pass=`).
///
/// Parsed for safety, not like a strict URL parser: a password may hold `/`, `?`, `#`, `:` or
/// `@` unescaped (a base64 one often holds `/` and `+`), so the userinfo ends at the **last**
/// `@`, and what follows it is the host. A URL whose path or query holds an `@` is shown with
/// less than it has, never with more. Text without `scheme://` is treated the same way.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = split_scheme(url);
    let host_on = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let kept = &host_on[..host_on.find(['?', '#']).unwrap_or(host_on.len())];
    match scheme {
        Some(s) => format!("{s}://{kept}"),
        None => kept.to_owned(),
    }
}

/// The password in `url`'s userinfo, as written (percent-encoded or not): what follows the
/// userinfo's first `:`, up to the last `@` ([`redact_url`] says why the last).
pub fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = split_scheme(url);
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `text` (an error that may quote `url` or parts of it) with `url` replaced by its redacted
/// form and its password, as written and percent-decoded, by `***`.
pub fn scrub_url(text: &str, url: &str) -> String {
    let mut out = if url.is_empty() {
        text.to_owned()
    } else {
        text.replace(url, &redact_url(url))
    };
    if let Some(password) = url_password(url) {
        let decoded = percent_decode(password);
        for p in [password, decoded.as_str()] {
            if !p.is_empty() {
                out = out.replace(p, "***");
            }
        }
    }
    out
}

/// `(scheme, rest)` of `scheme://rest`; no scheme when there is no `://` or what precedes it
/// is not a scheme (letters, digits, `+`, `-`, `.`, starting with a letter).
fn split_scheme(url: &str) -> (Option<&str>, &str) {
    match url.split_once("://") {
        Some((s, rest))
            if s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (Some(s), rest)
        }
        _ => (None, url),
    }
}

/// `%XX` sequences decoded (bytes that do not make UTF-8 are replaced); anything else as is.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn url(
    var: &'static str,
    given: Option<String>,
    default: &str,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let value = given.unwrap_or_else(|| default.to_owned());
    let ok = split_urls(&value).into_iter().all(|one| {
        let scheme = one.split_once("://").map(|(s, _)| s);
        scheme.is_some_and(|s| schemes.contains(&s))
    });
    if !ok {
        return Err(ConfigError::Invalid {
            var,
            reason: format!(
                "'{}' is not a {} URL (or a comma-separated list of them)",
                SecretUrl::new(value.as_str()).redacted(),
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        });
    }
    Ok(value)
}

/// `WXPUSH_HTTP_ADDR` as given (`None`: the default): the address, or `None` for `off`.
/// Public for `wxpush healthcheck`, which needs this one variable and no other.
pub fn http_addr(given: Option<String>) -> Result<Option<HttpAddr>, ConfigError> {
    let is_default = given.is_none();
    let value = given.unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .trim()
        .parse()
        .map(|addr| Some(HttpAddr { addr, is_default }))
        .map_err(|_| ConfigError::Invalid {
            var: "WXPUSH_HTTP_ADDR",
            reason: format!("'{value}' is not an address like 0.0.0.0:9464 (or 'off')"),
        })
}

/// A duration: whole seconds, or a number with `ms`, `s`, `m`, `h` or `d` (`6h`, `90s`).
/// `7d`, `1h`, `90s`: the largest whole unit.
fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn duration(
    var: &'static str,
    given: Option<String>,
    default: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    let Some(s) = given else {
        return Ok(default);
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| ConfigError::Invalid {
        var,
        reason: format!("'{s}' is not a duration like 90, 90s, 30m, 6h or 1d"),
    })?;
    let ms = match unit {
        "" | "s" => n.checked_mul(1000),
        "ms" => Some(n),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .filter(|ms| *ms > 0 && u128::from(*ms) <= max.as_millis())
    .ok_or_else(|| ConfigError::Invalid {
        var,
        reason: format!(
            "'{s}' is not a duration like 90, 90s, 30m, 6h or 1d (more than 0, at most {})",
            human(max)
        ),
    })?;
    Ok(std::time::Duration::from_millis(ms))
}

/// A yes/no variable: `1`, `true`, `yes` or `0`, `false`, `no` (unset: no).
fn flag(var: &'static str, given: Option<&str>) -> Result<bool, ConfigError> {
    match given.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            var,
            reason: format!("'{}' is not 1 or 0", given.unwrap_or_default()),
        }),
    }
}

fn number<T>(var: &'static str, given: Option<String>, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(s) = given else {
        return Ok(default);
    };
    match s.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        Ok(_) => Err(ConfigError::Invalid {
            var,
            reason: format!("'{s}' is below the minimum of {min}"),
        }),
        Err(_) => Err(ConfigError::Invalid {
            var,
            reason: format!("'{s}' is not a whole number"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        RawConfig::from_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = raw(&[("WXPUSH_APP_ID", "wx1234567890abcdef")])
            .validate()
            .unwrap();
        assert_eq!(c.amqp_url.expose(), DEFAULT_AMQP_URL);
        assert_eq!(c.redis_url.expose(), DEFAULT_REDIS_URL);
        assert_eq!(c.namespace.as_str(), "wxpush");
        assert_eq!(c.wechat_api_base, "https://api.weixin.qq.com");
        assert_eq!(c.send_rate, 500);
        assert_eq!(c.claim_margin_secs, 60);
        assert_eq!(c.user_cap, 100);
        assert_eq!(c.consents_per_template, 50);
        assert_eq!(c.templates_per_user, 100);
        assert_eq!(c.upload_limits.max_bytes, 65536);
        assert_eq!(
            c.http_addr,
            Some(HttpAddr {
                addr: "0.0.0.0:9464".parse().unwrap(),
                is_default: true
            })
        );
        assert_eq!(c.shutdown_grace, std::time::Duration::from_secs(10));
        assert_eq!(c.tls_ca_file, None);
        assert_eq!(
            c.apps.default_app().token_source,
            crate::TokenSource::Stable,
            "stable_token from v1.2"
        );
    }

    #[test]
    fn the_single_apps_token_source_comes_from_its_variable() {
        let c = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_TOKEN_SOURCE", "classic")])
            .validate()
            .unwrap();
        assert_eq!(
            c.apps.default_app().token_source,
            crate::TokenSource::Classic
        );
        let e = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_TOKEN_SOURCE", "weekly")])
            .validate()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("WXPUSH_TOKEN_SOURCE is invalid: 'weekly' is not"),
            "{e}"
        );
    }

    #[test]
    fn redis_durability_settings_are_off_by_default_and_checked() {
        let c = raw(&[("WXPUSH_APP_ID", "wx1")]).validate().unwrap();
        assert_eq!((c.redis_wait_replicas, c.redis_allow_eviction), (0, false));
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_REDIS_WAIT_REPLICAS", "2"),
            ("WXPUSH_REDIS_ALLOW_EVICTION", "1"),
        ])
        .validate()
        .unwrap();
        assert_eq!((c.redis_wait_replicas, c.redis_allow_eviction), (2, true));
        for (var, bad, says) in [
            ("WXPUSH_REDIS_WAIT_REPLICAS", "-1", "not a whole number"),
            (
                "WXPUSH_REDIS_WAIT_REPLICAS",
                "17",
                "above the maximum of 16",
            ),
            ("WXPUSH_REDIS_ALLOW_EVICTION", "maybe", "not 1 or 0"),
        ] {
            let e = raw(&[("WXPUSH_APP_ID", "wx1"), (var, bad)])
                .validate()
                .unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("{var} is invalid"))
                    && e.to_string().contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn the_retry_budget_is_a_duration_and_attempts_are_unbounded_by_default() {
        let c = raw(&[("WXPUSH_APP_ID", "wx1")]).validate().unwrap();
        assert_eq!(c.send_retry_for, DEFAULT_SEND_RETRY_FOR);
        assert_eq!(c.send_max_attempts, None);
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_SEND_RETRY_FOR", "90m"),
            ("WXPUSH_SEND_RETRY_MAX_DELAY", "2s"),
            ("WXPUSH_SEND_MAX_ATTEMPTS", "12"),
        ])
        .validate()
        .unwrap();
        assert_eq!(c.send_retry_for, std::time::Duration::from_secs(5400));
        assert_eq!(c.send_retry_max_delay, std::time::Duration::from_secs(2));
        assert_eq!(c.send_max_attempts, Some(12));
        for (given, secs) in [("600", 600), ("1d", 86_400), ("1500ms", 1)] {
            let c = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_SEND_RETRY_FOR", given)])
                .validate()
                .unwrap();
            assert_eq!(c.send_retry_for.as_secs(), secs, "{given}");
        }
        for bad in ["soon", "0", "6 hours", "8d", "400d", "-1h"] {
            let e = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_SEND_RETRY_FOR", bad)])
                .validate()
                .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("WXPUSH_SEND_RETRY_FOR is invalid"),
                "{bad}: {e}"
            );
        }
        let e = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_SEND_RETRY_MAX_DELAY", "2h"),
        ])
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "WXPUSH_SEND_RETRY_MAX_DELAY is invalid: '2h' is not a duration like 90, 90s, 30m, \
             6h or 1d (more than 0, at most 1h)"
        );
        let c = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_SEND_RETRY_FOR", "7d")])
            .validate()
            .unwrap();
        assert_eq!(c.send_retry_for, MAX_SEND_RETRY_FOR);
    }

    #[test]
    fn the_consent_caps_come_from_their_variables_and_are_at_least_one() {
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_CONSENTS_PER_TEMPLATE", "3"),
            ("WXPUSH_TEMPLATES_PER_USER", " 7 "),
        ])
        .validate()
        .unwrap();
        assert_eq!((c.consents_per_template, c.templates_per_user), (3, 7));
        for (var, value, reason) in [
            (
                "WXPUSH_CONSENTS_PER_TEMPLATE",
                "0",
                "'0' is below the minimum of 1",
            ),
            (
                "WXPUSH_CONSENTS_PER_TEMPLATE",
                "-1",
                "'-1' is not a whole number",
            ),
            (
                "WXPUSH_TEMPLATES_PER_USER",
                "lots",
                "'lots' is not a whole number",
            ),
            (
                "WXPUSH_TEMPLATES_PER_USER",
                "0",
                "'0' is below the minimum of 1",
            ),
        ] {
            let e = raw(&[("WXPUSH_APP_ID", "wx1"), (var, value)])
                .validate()
                .unwrap_err();
            assert_eq!(e.to_string(), format!("{var} is invalid: {reason}"));
        }
    }

    #[test]
    fn the_http_address_can_be_off_or_any_port() {
        let c = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_HTTP_ADDR", "off")])
            .validate()
            .unwrap();
        assert_eq!(c.http_addr, None);
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_HTTP_ADDR", "127.0.0.1:0"),
        ])
        .validate()
        .unwrap();
        assert_eq!(
            c.http_addr,
            Some(HttpAddr {
                addr: "127.0.0.1:0".parse().unwrap(),
                is_default: false
            })
        );
        // The default address given explicitly is the operator's choice: no fallback.
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_HTTP_ADDR", DEFAULT_HTTP_ADDR),
        ])
        .validate()
        .unwrap();
        assert!(!c.http_addr.unwrap().is_default);
        let e = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_HTTP_ADDR", "localhost")])
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("WXPUSH_HTTP_ADDR is invalid"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let e = raw(&[]).validate().unwrap_err();
        assert!(e.to_string().starts_with("WXPUSH_APP_ID is not set"));
        let e = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_SEND_RATE", "fast")])
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "WXPUSH_SEND_RATE is invalid: 'fast' is not a whole number"
        );
        let e = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_REDIS_URL", "http://u:hunter2@host/"),
        ])
        .validate()
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let c = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_APP_SECRET", "s3cr3t")])
            .validate()
            .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(c.apps.default_id().as_str(), "wx1");
    }

    #[test]
    fn the_frequency_cap_comes_from_each_app_or_the_variables() {
        let path = std::env::temp_dir().join(format!("wxpush-cap-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[apps]]\nappid = \"wxa\"\ndefault = true\n\
             max_campaign_messages_per_user_per_day = 3\ncap_single_messages = true\n\
             [[apps]]\nappid = \"wxb\"\n",
        )
        .unwrap();
        let file = path.to_string_lossy().into_owned();
        let caps = |vars: &[(&str, &str)]| {
            let mut all = vec![("WXPUSH_CONFIG", file.as_str())];
            all.extend_from_slice(vars);
            raw(&all).validate().map(|c| {
                c.apps
                    .iter()
                    .map(|a| (a.frequency_cap.per_day, a.frequency_cap.singles))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(caps(&[]).unwrap(), [(Some(3), true), (None, false)]);
        assert_eq!(
            caps(&[(CAP_VAR, "2"), (CAP_SINGLES_VAR, "0")]).unwrap(),
            [(Some(3), true), (Some(2), false)]
        );
        let zero = caps(&[(CAP_VAR, "0")]).unwrap_err().to_string();
        assert!(zero.contains(CAP_VAR) && zero.contains("minimum"), "{zero}");
        let nonsense = caps(&[(CAP_SINGLES_VAR, "often")]).unwrap_err().to_string();
        assert!(nonsense.contains(CAP_SINGLES_VAR), "{nonsense}");
        std::fs::write(
            &path,
            "[[apps]]\nappid = \"wxa\"\nmax_campaign_messages_per_user_per_day = 0\n",
        )
        .unwrap();
        let e = caps(&[]).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("max_campaign_messages_per_user_per_day"), "{e}");
        // The single app, from the variables alone.
        let single = raw(&[("WXPUSH_APP_ID", "wxs"), (CAP_VAR, "5")])
            .validate()
            .unwrap();
        assert_eq!(single.apps.default_app().frequency_cap.per_day, Some(5));
        assert!(!single.apps.default_app().frequency_cap.singles);
        assert_eq!(
            single.apps.default_app().frequency_cap.for_message(true),
            None
        );
    }

    #[test]
    fn several_apps_come_from_the_file_wxpush_config_names() {
        let path = std::env::temp_dir().join(format!("wxpush-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[apps]]\nappid = \"wxa\"\nsecret = \"sa\"\ndefault = true\n\
             [[apps]]\nappid = \"wxb\"\nsecret = \"sb\"\nsend_rate = 9\n",
        )
        .unwrap();
        let file = path.to_string_lossy().into_owned();
        let c = raw(&[("WXPUSH_CONFIG", &file), ("WXPUSH_SEND_RATE", "40")])
            .validate()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let rates: Vec<_> = c
            .apps
            .iter()
            .map(|a| (a.id.as_str(), a.send_rate))
            .collect();
        assert_eq!(rates, [("wxa", 40), ("wxb", 9)]);
        assert!(!format!("{c:?}").contains("sb"), "{c:?}");
        let e = raw(&[("WXPUSH_CONFIG", &file)]).validate().unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("WXPUSH_CONFIG is invalid: cannot read {file}: ")),
            "{e}"
        );
    }

    #[test]
    fn redacted_urls_keep_scheme_host_port_and_path_only() {
        let cases = [
            // The example: an unencoded base64 password holding '/' and '+'.
            (
                "redis://:Zm9v/YmFy+cw==@127.0.0.1:6379/0",
                "redis://127.0.0.1:6379/0",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://127.0.0.1:5672/%2f",
            ),
            ("redis://127.0.0.1/0", "redis://127.0.0.1/0"),
            ("redis://:pw@h:6379", "redis://h:6379"),
            (
                "amqps://guest:guest@mq.example:5671/%2f",
                "amqps://mq.example:5671/%2f",
            ),
            (
                "rediss://:hunter2@cache.example:6380/0",
                "rediss://cache.example:6380/0",
            ),
            // '@', ':', '/', '?', '#' unencoded in a password; the userinfo ends at the last '@'.
            ("amqp://user:p@ss/w:o?r#d@mq:5672/vh", "amqp://mq:5672/vh"),
            // Percent-encoded, as URLs require.
            (
                "amqp://u%40x:p%2Fa%40ss%2B%252F@mq:5672/%2f",
                "amqp://mq:5672/%2f",
            ),
            // IPv6 hosts, with and without a password.
            ("redis://:p/w@[::1]:6379/2", "redis://[::1]:6379/2"),
            (
                "amqp://[fe80::1%25eth0]:5672/%2f",
                "amqp://[fe80::1%25eth0]:5672/%2f",
            ),
            ("redis://user:pw@[2001:db8::7]/0", "redis://[2001:db8::7]/0"),
            // Never a query or fragment (redis+unix takes its password there).
            (
                "redis+unix:///run/redis.sock?db=1&pass=hunter2",
                "redis+unix:///run/redis.sock",
            ),
            ("amqp://mq/%2f?heartbeat=10#x", "amqp://mq/%2f"),
            // A user name alone is userinfo too.
            ("redis://someone@cache:6379/0", "redis://cache:6379/0"),
            // Not a URL: still nothing before the last '@' nor after a '?'.
            (":hunter2@cache:6379", "cache:6379"),
            ("no-scheme/x?pass=hunter2", "no-scheme/x"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn the_password_is_what_follows_the_first_colon_up_to_the_last_at() {
        assert_eq!(
            url_password("redis://:Zm9v/YmFy+cw==@127.0.0.1:6379/0"),
            Some("Zm9v/YmFy+cw==")
        );
        assert_eq!(
            url_password("amqp://user:p@ss/w:o?r#d@mq:5672/vh"),
            Some("p@ss/w:o?r#d")
        );
        assert_eq!(url_password("amqp://u%3Ax:p%2F@mq/%2f"), Some("p%2F"));
        assert_eq!(url_password("redis://someone@cache/0"), None);
        assert_eq!(url_password("redis://:@cache/0"), None);
        assert_eq!(url_password("redis://cache/0"), None);
        let url = SecretUrl::new("amqp://u:p%2Fa%40ss@mq/%2f");
        assert_eq!(
            url.passwords()
                .iter()
                .map(Secret::expose)
                .collect::<Vec<_>>(),
            ["p%2Fa%40ss"]
        );
        assert_eq!(percent_decode("p%2Fa%40ss%2B%252F"), "p/a@ss+%2F");
    }

    #[test]
    fn errors_quoting_a_url_or_its_password_are_scrubbed() {
        let url = "amqp://u:p%2Fa%40ss@mq:5672/%2f";
        let e = format!("bad {url}: password p%2Fa%40ss, decoded p/a@ss");
        assert_eq!(
            scrub_url(&e, url),
            "bad amqp://mq:5672/%2f: password ***, decoded ***"
        );
    }

    #[test]
    fn no_configuration_type_prints_a_secret() {
        // Passwords with '/', '@', '+' and '%2F', raw in one URL and percent-encoded in the
        // other; two apps in a file (one secret each) and the variables' secret.
        let amqp_pw = "Am/q@P+w%2Fd";
        let redis_pw = "Zm9v/YmFy+cw==";
        let path = std::env::temp_dir().join(format!("wxpush-debug-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "default = \"wxa\"\n[[apps]]\nappid = \"wxa\"\nsecret = \"file-secret-a\"\n\
             [[apps]]\nappid = \"wxb\"\nsecret = \"file-secret-b\"\n",
        )
        .unwrap();
        let file = path.to_string_lossy().into_owned();
        let amqp = "amqp://user:Am%2Fq%40P%2Bw%252Fd@mq.example:5672/%2f".to_owned();
        let redis = format!("redis://:{redis_pw}@[::1]:6379/0");
        let raw = raw(&[
            ("WXPUSH_CONFIG", &file),
            ("WXPUSH_APP_ID", "wxa"),
            ("WXPUSH_APP_SECRET", "file-secret-a"),
            ("WXPUSH_AMQP_URL", &amqp),
            ("WXPUSH_REDIS_URL", &redis),
        ]);
        let raw_debug = format!("{raw:?}");
        let raw_secrets: Vec<String> = raw
            .secrets()
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
        let c = raw.validate().unwrap();
        std::fs::remove_file(&path).unwrap();
        let shown = format!("{raw_debug}\n{c:?}\n{c:#?}\n{} {}", c.amqp_url, c.redis_url);
        for secret in [
            amqp_pw,
            "Am%2Fq%40P%2Bw%252Fd",
            redis_pw,
            "file-secret-a",
            "file-secret-b",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("\"amqp://mq.example:5672/%2f\""), "{shown}");
        assert!(shown.contains("redis://[::1]:6379/0"), "{shown}");
        assert_eq!(c.amqp_url.expose(), amqp, "the client still gets the URL");
        // What the scrubber is given: every secret, before and after validation.
        let mut secrets: Vec<String> = c.secrets().iter().map(|s| s.expose().to_owned()).collect();
        secrets.sort();
        assert_eq!(
            secrets,
            [
                "Am%2Fq%40P%2Bw%252Fd",
                redis_pw,
                "file-secret-a",
                "file-secret-b"
            ]
        );
        for s in &secrets {
            assert!(raw_secrets.contains(s), "{s} missing from {raw_secrets:?}");
        }
    }

    #[test]
    fn tls_schemes_are_accepted_with_a_ca_file() {
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_AMQP_URL", "amqps://guest:guest@mq.example:5671/%2f"),
            ("WXPUSH_REDIS_URL", "rediss://:pw@cache.example:6380/0"),
            ("WXPUSH_TLS_CA_FILE", "/etc/wxpush/ca.pem"),
        ])
        .validate()
        .unwrap();
        assert_eq!(
            c.amqp_url.expose(),
            "amqps://guest:guest@mq.example:5671/%2f"
        );
        assert_eq!(c.redis_url.expose(), "rediss://:pw@cache.example:6380/0");
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/wxpush/ca.pem"))
        );
    }

    #[test]
    fn a_comma_separated_list_is_several_urls_and_a_comma_in_a_password_is_not_a_split() {
        let list = SecretUrl::new(
            "amqp://u:p%2Fone@mq1:5701/%2f, amqp://u:two,three@mq2:5702/%2f,amqps://mq3/v",
        );
        assert_eq!(
            list.urls(),
            [
                "amqp://u:p%2Fone@mq1:5701/%2f",
                "amqp://u:two,three@mq2:5702/%2f",
                "amqps://mq3/v"
            ]
        );
        assert_eq!(
            list.redacted(),
            "amqp://mq1:5701/%2f,amqp://mq2:5702/%2f,amqps://mq3/v"
        );
        let passwords: Vec<String> = list
            .passwords()
            .iter()
            .map(|p| p.expose().to_owned())
            .collect();
        assert_eq!(passwords, ["p%2Fone", "two,three"]);
        assert_eq!(split_urls("redis://a:1"), ["redis://a:1"]);
        assert_eq!(
            split_urls("amqp://h1,amqp://h2, "),
            ["amqp://h1", "amqp://h2"]
        );
        assert_eq!(
            split_urls(",amqp://h1,,amqp://h2,"),
            ["amqp://h1", "amqp://h2"]
        );
        // Each URL of a list is checked for its scheme.
        let e = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_AMQP_URL", "amqp://mq1/%2f,redis://:pw@mq2/0"),
        ])
        .validate()
        .unwrap_err();
        assert!(
            e.to_string().contains("amqp://mq1/%2f,redis://mq2/0"),
            "{e}"
        );
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn each_url_keeps_to_its_own_schemes() {
        // A Redis URL is not an AMQP one, TLS or not, and the error lists every scheme.
        let e = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_AMQP_URL", "rediss://:hunter2@cache.example/0"),
        ])
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "WXPUSH_AMQP_URL is invalid: 'rediss://cache.example/0' is not a amqp:// or amqps:// \
             URL (or a comma-separated list of them)"
        );
        let e = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_REDIS_URL", "amqps://guest:guest@mq.example/%2f"),
        ])
        .validate()
        .unwrap_err();
        assert!(
            e.to_string().starts_with("WXPUSH_REDIS_URL is invalid"),
            "{e}"
        );
        assert!(e.to_string().contains("rediss://"), "{e}");
        assert!(!e.to_string().contains("guest:guest"), "{e}");
        // Only the schemes the clients speak: other TLS spellings are refused.
        let e = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_REDIS_URL", "redis+tls://cache.example/0"),
        ])
        .validate()
        .unwrap_err();
        assert!(
            e.to_string().starts_with("WXPUSH_REDIS_URL is invalid"),
            "{e}"
        );
    }

    #[test]
    fn quiet_hours_from_the_variables_and_the_release_spread() {
        let c = raw(&[
            ("WXPUSH_APP_ID", "wx1"),
            ("WXPUSH_QUIET_HOURS", "22:00-08:00"),
            ("WXPUSH_TIMEZONE", "Europe/Berlin"),
        ])
        .validate()
        .unwrap();
        let q = c.apps.default_app().quiet().unwrap();
        assert_eq!(q.window.to_string(), "22:00-08:00");
        assert_eq!(q.zone.name(), "Europe/Berlin");
        assert_eq!(c.quiet_spread, DEFAULT_QUIET_SPREAD);
        let c = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_QUIET_SPREAD_SECS", "0")])
            .validate()
            .unwrap();
        assert_eq!(c.quiet_spread, std::time::Duration::ZERO);
        assert_eq!(c.apps.default_app().quiet(), None, "never quiet by default");
        for bad in ["61", "-1", "1m"] {
            let e = raw(&[("WXPUSH_APP_ID", "wx1"), ("WXPUSH_QUIET_SPREAD_SECS", bad)])
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "WXPUSH_QUIET_SPREAD_SECS is invalid: '{bad}' is not a whole number of \
                     seconds from 0 to 60"
                )),
                "{e}"
            );
        }
    }
}
