//! Configuration (contract section 2): the raw strings as given, and the validated [`Config`].
//!
//! [`RawConfig`] is what the environment (or command-line flags) said; [`RawConfig::validate`]
//! turns it into a [`Config`] or one readable [`ConfigError`] naming the variable at fault.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show them.
//! The apps an install serves come from the single-app variables and the `WXPUSH_CONFIG` file,
//! which [`RawConfig::validate`] reads ([`crate::apps`] says how the two meet).
//! This module must not connect to anything; checking that a URL is reachable is the roles'.

use std::collections::HashMap;
use std::fmt;

use crate::apps::{Apps, VarApp, CONFIG_FILE_VAR, TOKEN_SOURCE_VAR};
use crate::names::Namespace;
use crate::upload::UploadLimits;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_NAMESPACE: &str = "wxpush";
pub const DEFAULT_WECHAT_API_BASE: &str = "https://api.weixin.qq.com";
pub const DEFAULT_SEND_RATE: u32 = 500;
pub const DEFAULT_CLAIM_MARGIN_SECS: u32 = 60;
pub const DEFAULT_USER_CAP: u32 = 100;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const DEFAULT_INGEST_PREFETCH: u16 = 2000;
pub const DEFAULT_INGEST_BATCH: usize = 500;
pub const DEFAULT_SEND_CONCURRENCY: usize = 64;
pub const DEFAULT_SEND_MAX_ATTEMPTS: u32 = 8;
pub const DEFAULT_QUOTA_COOLDOWN_SECS: u64 = 3600;
pub const DEFAULT_DISPATCH_PAGE_SIZE: usize = 1000;
/// Where `/healthz`, `/readyz` and `/metrics` are served (port 9464, Prometheus exporters').
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9464";
pub const DEFAULT_SHUTDOWN_SECS: u64 = 10;

/// A secret string (the app secret). Printing it shows `***`.
#[derive(Clone, PartialEq, Eq)]
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

/// Configuration as given, every value an unparsed string (`None` where not set).
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub amqp_url: Option<String>,
    pub redis_url: Option<String>,
    pub namespace: Option<String>,
    pub wechat_api_base: Option<String>,
    pub app_id: Option<String>,
    pub app_secret: Option<String>,
    pub send_rate: Option<String>,
    pub claim_margin_secs: Option<String>,
    pub user_cap: Option<String>,
    pub max_message_bytes: Option<String>,
    pub ingest_prefetch: Option<String>,
    pub ingest_batch: Option<String>,
    pub send_concurrency: Option<String>,
    pub send_max_attempts: Option<String>,
    pub quota_cooldown_secs: Option<String>,
    pub dispatch_page_size: Option<String>,
    pub http_addr: Option<String>,
    pub shutdown_secs: Option<String>,
    pub tls_ca_file: Option<String>,
    /// Path of the several-apps TOML file.
    pub config_file: Option<String>,
    /// Where the single app's access token comes from (`stable`, `classic` or a URL).
    pub token_source: Option<String>,
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
    TOKEN_SOURCE_VAR,
];

impl RawConfig {
    /// Reads the `WXPUSH_*` variables of the process environment.
    pub fn from_env() -> Self {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the `WXPUSH_*` variables from a map (the environment, or a test's).
    pub fn from_map(vars: &HashMap<String, String>) -> Self {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        Self {
            amqp_url: get(ENV_VARS[0]),
            redis_url: get(ENV_VARS[1]),
            namespace: get(ENV_VARS[2]),
            wechat_api_base: get(ENV_VARS[3]),
            app_id: get(ENV_VARS[4]),
            app_secret: get(ENV_VARS[5]),
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
            token_source: get(ENV_VARS[20]),
        }
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let amqp_url = url(
            "WXPUSH_AMQP_URL",
            self.amqp_url,
            DEFAULT_AMQP_URL,
            &["amqp", "amqps"],
        )?;
        let redis_url = url(
            "WXPUSH_REDIS_URL",
            self.redis_url,
            DEFAULT_REDIS_URL,
            &["redis", "rediss", "redis+unix", "unix"],
        )?;
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
            },
            file.as_ref().map(|(p, t)| (*p, t.as_str())),
            send_rate,
        )?;
        let http_addr = http_addr(self.http_addr)?;
        let tls_ca_file = self.tls_ca_file.map(std::path::PathBuf::from);
        Ok(Config {
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
            user_cap: number("WXPUSH_USER_CAP", self.user_cap, DEFAULT_USER_CAP, 1)?,
            upload_limits: UploadLimits {
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
            send_concurrency: number(
                "WXPUSH_SEND_CONCURRENCY",
                self.send_concurrency,
                DEFAULT_SEND_CONCURRENCY,
                1,
            )?,
            send_max_attempts: number(
                "WXPUSH_SEND_MAX_ATTEMPTS",
                self.send_max_attempts,
                DEFAULT_SEND_MAX_ATTEMPTS,
                1,
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

/// Validated configuration shared by every role.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp_url: String,
    pub redis_url: String,
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
    pub upload_limits: UploadLimits,
    /// Unacknowledged uploads one ingest process may hold.
    pub ingest_prefetch: u16,
    /// Most uploads written to Redis in one round trip.
    pub ingest_batch: usize,
    /// Send jobs one sender process handles at once.
    pub send_concurrency: usize,
    /// Attempts before a send job is dead-lettered.
    pub send_max_attempts: u32,
    /// How long the fleet pauses after WeChat's daily quota answer (45009).
    pub quota_cooldown_secs: u64,
    /// Recipients the dispatcher publishes per page (one checkpoint per page).
    pub dispatch_page_size: usize,
    /// Where the health and metrics endpoints listen (`None`: `WXPUSH_HTTP_ADDR=off`; port 0
    /// picks a free port).
    pub http_addr: Option<std::net::SocketAddr>,
    /// How long a stopping role may take to finish or hand back its work before it exits.
    pub shutdown_grace: std::time::Duration,
    /// CA certificates (PEM) to trust for `amqps://` (beside the system's store) and
    /// `rediss://` (instead of it: the redis crate replaces its roots), see docs/tls.md.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

fn url(
    var: &'static str,
    given: Option<String>,
    default: &str,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let value = given.unwrap_or_else(|| default.to_owned());
    let scheme = value.split_once("://").map(|(s, _)| s);
    let ok = scheme.is_some_and(|s| schemes.contains(&s));
    if !ok {
        return Err(ConfigError::Invalid {
            var,
            reason: format!(
                "'{}' is not a {} URL",
                redact_url(&value),
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

fn http_addr(given: Option<String>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let value = given.unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| ConfigError::Invalid {
            var: "WXPUSH_HTTP_ADDR",
            reason: format!("'{value}' is not an address like 0.0.0.0:9464 (or 'off')"),
        })
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
        assert_eq!(c.amqp_url, DEFAULT_AMQP_URL);
        assert_eq!(c.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(c.namespace.as_str(), "wxpush");
        assert_eq!(c.wechat_api_base, "https://api.weixin.qq.com");
        assert_eq!(c.send_rate, 500);
        assert_eq!(c.claim_margin_secs, 60);
        assert_eq!(c.user_cap, 100);
        assert_eq!(c.upload_limits.max_bytes, 65536);
        assert_eq!(c.http_addr, Some("0.0.0.0:9464".parse().unwrap()));
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
        assert_eq!(c.http_addr, Some("127.0.0.1:0".parse().unwrap()));
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
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
        assert_eq!(redact_url("redis://:pw@h:6379"), "redis://:***@h:6379");
        assert_eq!(
            redact_url("amqps://guest:guest@mq.example:5671/%2f"),
            "amqps://guest:***@mq.example:5671/%2f"
        );
        assert_eq!(
            redact_url("rediss://:hunter2@cache.example:6380/0"),
            "rediss://:***@cache.example:6380/0"
        );
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
        assert_eq!(c.amqp_url, "amqps://guest:guest@mq.example:5671/%2f");
        assert_eq!(c.redis_url, "rediss://:pw@cache.example:6380/0");
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/wxpush/ca.pem"))
        );
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
            "WXPUSH_AMQP_URL is invalid: 'rediss://:***@cache.example/0' is not a amqp:// or \
             amqps:// URL"
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
}
