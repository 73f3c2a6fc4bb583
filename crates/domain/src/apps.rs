//! The mini programs one install serves (contract section 7): [`Apps`], built from the
//! single-app variables (`WXPUSH_APP_ID`, `WXPUSH_APP_SECRET`, `WXPUSH_SEND_RATE`,
//! `WXPUSH_TOKEN_SOURCE`) and the TOML file named by `WXPUSH_CONFIG`.
//!
//! The file, every key optional except `appid`:
//!
//! ```toml
//! default = "wx1234567890abcdef"   # or `default = true` on one app
//!
//! [[apps]]
//! appid = "wx1234567890abcdef"
//! secret = "..."
//! send_rate = 200                  # this app's own ceiling; WXPUSH_SEND_RATE when absent
//! token_source = "stable"          # or "classic", or the URL of the install's token service
//! templates = ["TPL_A", "TPL_B"]   # the app's subscribe templates; any template when absent
//! push_token = "..."               # the message push's Token (contract §8.4; `wxpush events`)
//! encoding_aes_key = "..."         # its EncodingAESKey, 43 characters (secure mode)
//! consent_source = "client"        # or "events": where the app's consents come from
//! max_campaign_messages_per_user_per_day = 2   # frequency cap, a rolling 24 h (contract §8.5)
//! cap_single_messages = false      # whether single messages count toward the cap too
//! quiet_hours = "22:00-08:00"      # campaigns do not message its users then (contract §8.5)
//! timezone = "Asia/Shanghai"       # the zone quiet_hours is read in (this is the default)
//! ```
//!
//! `WXPUSH_MAX_CAMPAIGN_MESSAGES_PER_USER_PER_DAY` and `WXPUSH_CAP_SINGLE_MESSAGES` are the cap
//! of every app that states none, as `WXPUSH_SEND_RATE` is the ceiling of every app that
//! states none ([`Apps::with_cap_defaults`]).
//!
//! The single app's `WXPUSH_PUSH_TOKEN`, `WXPUSH_ENCODING_AES_KEY`, `WXPUSH_CONSENT_SOURCE`,
//! `WXPUSH_QUIET_HOURS` and `WXPUSH_TIMEZONE` meet the file as `WXPUSH_TOKEN_SOURCE` does.
//!
//! How the two sources meet ([`Apps::build`]): the variables' app joins the file's list (its
//! secret and `WXPUSH_TOKEN_SOURCE` fill in what the file leaves out; two different secrets or
//! token sources are an error, and `WXPUSH_TOKEN_SOURCE` needs `WXPUSH_APP_ID` to say whose
//! it is when a file lists the apps); the default
//! app is the one the file names, else `WXPUSH_APP_ID`, else the only app. Anything unclear
//! (an unknown key, an app listed twice, two defaults) is refused, because a typo here would
//! send one app's messages with another's credentials.
//! Nothing read from the file is ever quoted back: its errors say the line, the key and the
//! kind of problem, never a value, and [`file_secrets`] hands every secret in it to the log
//! scrubber, even from a file that does not parse.
//! This module must not read the file itself ([`crate::config`] does) nor know about roles.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::config::{ConfigError, Secret};
use crate::credential::check_template_id;
use crate::names::AppId;
use crate::quiet::{AppZone, QuietHours, QuietWindow};
use crate::token_source::TokenSource;

/// The variable giving the single app's token source.
pub const TOKEN_SOURCE_VAR: &str = "WXPUSH_TOKEN_SOURCE";

/// The variable giving the single app's message push Token (contract §8.4).
pub const PUSH_TOKEN_VAR: &str = "WXPUSH_PUSH_TOKEN";

/// The variable giving the single app's message push EncodingAESKey (secure mode).
pub const ENCODING_AES_KEY_VAR: &str = "WXPUSH_ENCODING_AES_KEY";

/// The variable giving the single app's consent source (`client` or `events`).
pub const CONSENT_SOURCE_VAR: &str = "WXPUSH_CONSENT_SOURCE";

/// The variable giving the single app's quiet hours (`22:00-08:00`, contract §8.5).
pub const QUIET_HOURS_VAR: &str = "WXPUSH_QUIET_HOURS";

/// The variable giving the single app's time zone (`Asia/Shanghai` when unset).
pub const TIMEZONE_VAR: &str = "WXPUSH_TIMEZONE";

/// Where an app's subscribe consents come from (contract §8.4): one source only, so that one
/// tap is never two consents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsentSource {
    /// The `subscriptions` of the client's uploads (the default); popup events are ignored.
    #[default]
    Client,
    /// WeChat's `subscribe_msg_popup_event`s (`wxpush events`); uploads' `subscriptions` are
    /// ignored.
    Events,
}

impl ConsentSource {
    /// `client` or `events`; the error never quotes what was given (it may be a secret
    /// pasted in the wrong place).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "client" => Ok(Self::Client),
            "events" => Ok(Self::Events),
            _ => Err("is not \"client\" or \"events\"".to_owned()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Events => "events",
        }
    }
}

impl std::fmt::Display for ConsentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a message push Token as WeChat's console allows it: 3 to 32 letters or digits.
/// Never quotes it.
pub fn check_push_token(token: &str) -> Result<(), String> {
    if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "is not 3 to 32 letters or digits (WeChat's rule for the Token; it has {} \
             characters)",
            token.chars().count()
        ));
    }
    Ok(())
}

/// Checks an EncodingAESKey: 43 characters of base64 (WeChat's console makes them so). Never
/// quotes it.
pub fn check_encoding_aes_key(key: &str) -> Result<(), String> {
    if key.len() != 43
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err(format!(
            "is not 43 characters of base64 (it has {} characters)",
            key.chars().count()
        ));
    }
    Ok(())
}

/// The variable giving the frequency cap of every app whose entry states none.
pub const CAP_VAR: &str = "WXPUSH_MAX_CAMPAIGN_MESSAGES_PER_USER_PER_DAY";

/// The variable saying whether single messages count toward the cap of every app whose entry
/// does not say.
pub const CAP_SINGLES_VAR: &str = "WXPUSH_CAP_SINGLE_MESSAGES";

/// An app's frequency cap (contract §8.5): at most `per_day` campaign messages may reach one
/// user in any 24 hours; a user at the cap is recorded `capped` for the campaign, nothing spent.
/// Counted in the user's own hash slot by the script that claims the credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrequencyCap {
    /// Messages per user per rolling 24 hours; `None`: no cap.
    pub per_day: Option<u32>,
    /// Whether single messages (contract §8.2) count toward the cap, and are held to it.
    pub singles: bool,
}

impl FrequencyCap {
    /// The cap a message is held to: `Some(n)` when the app has a cap and the message counts
    /// (every campaign message; a single message only with `singles`).
    pub fn for_message(&self, single: bool) -> Option<u32> {
        if single && !self.singles {
            return None;
        }
        self.per_day
    }
}

/// The variable naming the several-apps file.
pub const CONFIG_FILE_VAR: &str = "WXPUSH_CONFIG";

/// One mini program: its appid, its secret and its own fleet-wide send ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub id: AppId,
    /// Needed only by roles that call WeChat.
    pub secret: Option<Secret>,
    /// Send calls per second for this app, shared by every sender process.
    pub send_rate: u32,
    /// Where its access token comes from (contract §8.6; `stable` unless configured).
    pub token_source: TokenSource,
    /// The app's subscribe-message template ids (`templates` in the file): consents for any
    /// other template are dropped at ingest. `None`: every template is accepted.
    pub templates: Option<BTreeSet<String>>,
    /// The message push's Token (`push_token`): `wxpush events` serves the app only with it.
    pub push_token: Option<Secret>,
    /// The message push's EncodingAESKey (`encoding_aes_key`, 43 characters, checked), for
    /// secure mode.
    pub encoding_aes_key: Option<Secret>,
    /// Where the app's consents come from (`consent_source`, `client` unless configured).
    pub consent_source: ConsentSource,
    /// When campaigns do not message the app's users (`quiet_hours`, contract §8.5), read in
    /// `timezone`; `None`: never quiet.
    pub quiet_hours: Option<QuietWindow>,
    /// The app's time zone (`timezone`, `Asia/Shanghai` unless configured).
    pub timezone: AppZone,
    /// Its frequency cap (`max_campaign_messages_per_user_per_day`, `cap_single_messages`).
    pub frequency_cap: FrequencyCap,
}

impl AppConfig {
    /// An app with only its id, secret and rate given, everything else as by default.
    pub fn new(id: AppId, secret: Option<Secret>, send_rate: u32) -> Self {
        Self {
            id,
            secret,
            send_rate,
            token_source: TokenSource::Stable,
            templates: None,
            push_token: None,
            encoding_aes_key: None,
            consent_source: ConsentSource::Client,
            quiet_hours: None,
            timezone: AppZone::default(),
            frequency_cap: FrequencyCap::default(),
        }
    }

    /// The app's quiet hours in its zone, if it has any.
    pub fn quiet(&self) -> Option<QuietHours> {
        self.quiet_hours.map(|window| QuietHours {
            window,
            zone: self.timezone.clone(),
        })
    }

    /// Whether a consent for `template` is kept for this app: it is one of the app's
    /// `templates`, or the app lists none.
    pub fn accepts_template(&self, template: &str) -> bool {
        self.templates
            .as_ref()
            .is_none_or(|list| list.contains(template))
    }
}

/// Every app of the install, the default one first. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apps {
    list: Vec<AppConfig>,
}

/// What the single-app variables said.
#[derive(Debug, Clone, Default)]
pub struct VarApp {
    pub id: Option<String>,
    pub secret: Option<Secret>,
    /// `WXPUSH_TOKEN_SOURCE`, unparsed.
    pub token_source: Option<String>,
    /// `WXPUSH_PUSH_TOKEN`.
    pub push_token: Option<Secret>,
    /// `WXPUSH_ENCODING_AES_KEY`.
    pub encoding_aes_key: Option<Secret>,
    /// `WXPUSH_CONSENT_SOURCE`, unparsed.
    pub consent_source: Option<String>,
    /// `WXPUSH_QUIET_HOURS`, unparsed.
    pub quiet_hours: Option<String>,
    /// `WXPUSH_TIMEZONE`, unparsed.
    pub timezone: Option<String>,
    /// `WXPUSH_MAX_CAMPAIGN_MESSAGES_PER_USER_PER_DAY` (checked: at least 1): the cap of every
    /// app that states none.
    pub cap: Option<u32>,
    /// `WXPUSH_CAP_SINGLE_MESSAGES`: whether single messages count, for every app that does
    /// not say.
    pub cap_singles: Option<bool>,
}

/// Keys of the apps file whose values are secrets ([`file_secrets`]).
pub const SECRET_KEYS: &[&str] = &["secret", "push_token", "encoding_aes_key"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    default: Option<String>,
    #[serde(default)]
    apps: Vec<FileApp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApp {
    appid: String,
    secret: Option<Secret>,
    #[serde(default)]
    default: bool,
    send_rate: Option<u32>,
    token_source: Option<String>,
    templates: Option<Vec<String>>,
    push_token: Option<Secret>,
    encoding_aes_key: Option<Secret>,
    consent_source: Option<String>,
    quiet_hours: Option<String>,
    timezone: Option<String>,
    max_campaign_messages_per_user_per_day: Option<u32>,
    cap_single_messages: Option<bool>,
}

impl Apps {
    /// One app, from the single-app variables (and tests), its token from `stable_token`.
    pub fn single(id: AppId, secret: Option<Secret>, send_rate: u32) -> Self {
        Self {
            list: vec![AppConfig::new(id, secret, send_rate)],
        }
    }

    /// The install's apps from the variables and, when `WXPUSH_CONFIG` is set, the file's text
    /// (`file`: its path, for errors, and its contents). `send_rate` is `WXPUSH_SEND_RATE`,
    /// the ceiling of every app that states none.
    pub fn build(
        vars: VarApp,
        file: Option<(&str, &str)>,
        send_rate: u32,
    ) -> Result<Self, ConfigError> {
        let var_id = vars
            .id
            .as_deref()
            .map(|s| {
                AppId::new(s).map_err(|e| ConfigError::Invalid {
                    var: "WXPUSH_APP_ID",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let var_secret = vars.secret;
        let var_source = vars
            .token_source
            .as_deref()
            .map(|s| {
                TokenSource::parse(s).map_err(|reason| ConfigError::Invalid {
                    var: TOKEN_SOURCE_VAR,
                    reason,
                })
            })
            .transpose()?;
        let var_consent = vars
            .consent_source
            .as_deref()
            .map(|s| {
                ConsentSource::parse(s).map_err(|e| ConfigError::Invalid {
                    var: CONSENT_SOURCE_VAR,
                    reason: format!("'{}' {e}", s.trim()),
                })
            })
            .transpose()?;
        let var_quiet = vars
            .quiet_hours
            .as_deref()
            .map(|s| {
                QuietWindow::parse(s).map_err(|e| ConfigError::Invalid {
                    var: QUIET_HOURS_VAR,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let var_zone = vars
            .timezone
            .as_deref()
            .map(|s| {
                AppZone::parse(s).map_err(|e| ConfigError::Invalid {
                    var: TIMEZONE_VAR,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let var_push_token = vars.push_token.filter(|s| !s.expose().is_empty());
        if let Some(t) = &var_push_token {
            check_push_token(t.expose()).map_err(|reason| ConfigError::Invalid {
                var: PUSH_TOKEN_VAR,
                reason,
            })?;
        }
        let var_aes_key = vars.encoding_aes_key.filter(|s| !s.expose().is_empty());
        if let Some(k) = &var_aes_key {
            check_encoding_aes_key(k.expose()).map_err(|reason| ConfigError::Invalid {
                var: ENCODING_AES_KEY_VAR,
                reason,
            })?;
        }
        let Some((path, text)) = file else {
            let Some(id) = var_id else {
                return Err(ConfigError::Missing {
                    var: "WXPUSH_APP_ID",
                    hint: "set it to the mini program's appid (or list several apps in a \
                           WXPUSH_CONFIG file); credentials are kept per app",
                });
            };
            let mut single = Self::single(id, var_secret, send_rate);
            let app = &mut single.list[0];
            app.frequency_cap = FrequencyCap {
                per_day: vars.cap,
                singles: vars.cap_singles.unwrap_or(false),
            };
            app.token_source = var_source.unwrap_or_default();
            app.push_token = var_push_token;
            app.encoding_aes_key = var_aes_key;
            app.consent_source = var_consent.unwrap_or_default();
            app.quiet_hours = var_quiet;
            app.timezone = var_zone.unwrap_or_default();
            if let Err((key, reason)) = check_push_keys(app) {
                let var = match key {
                    "consent_source" => CONSENT_SOURCE_VAR,
                    _ => ENCODING_AES_KEY_VAR,
                };
                return Err(ConfigError::Invalid {
                    var,
                    reason: format!("{reason} ({PUSH_TOKEN_VAR})"),
                });
            }
            return Ok(single);
        };
        if var_source.is_some() && var_id.is_none() {
            return Err(ConfigError::Invalid {
                var: TOKEN_SOURCE_VAR,
                reason: format!(
                    "it is the token source of WXPUSH_APP_ID's app, which is not set; with \
                     {CONFIG_FILE_VAR} give each app its own token_source"
                ),
            });
        }
        for (given, var, key) in [
            (var_push_token.is_some(), PUSH_TOKEN_VAR, "push_token"),
            (
                var_aes_key.is_some(),
                ENCODING_AES_KEY_VAR,
                "encoding_aes_key",
            ),
            (var_consent.is_some(), CONSENT_SOURCE_VAR, "consent_source"),
            (var_quiet.is_some(), QUIET_HOURS_VAR, "quiet_hours"),
            (var_zone.is_some(), TIMEZONE_VAR, "timezone"),
        ] {
            if given && var_id.is_none() {
                return Err(ConfigError::Invalid {
                    var,
                    reason: format!(
                        "it is WXPUSH_APP_ID's app's, which is not set; with {CONFIG_FILE_VAR} \
                         give each app its own {key}"
                    ),
                });
            }
        }
        let invalid = |reason: String| ConfigError::Invalid {
            var: CONFIG_FILE_VAR,
            reason: format!("{path}: {reason}"),
        };
        let parsed: FileConfig = toml::from_str(text).map_err(|e| invalid(toml_error(text, &e)))?;

        let mut list: Vec<AppConfig> = Vec::with_capacity(parsed.apps.len() + 1);
        // Whether the file gave each listed app a token_source.
        let mut sourced: Vec<bool> = Vec::with_capacity(parsed.apps.len());
        // Whether the file gave each listed app a consent_source.
        let mut consent_sourced: Vec<bool> = Vec::with_capacity(parsed.apps.len());
        // Whether the file gave each listed app quiet_hours, and timezone.
        let mut quiet_given: Vec<(bool, bool)> = Vec::with_capacity(parsed.apps.len());
        let mut flagged: Vec<AppId> = Vec::new();
        // Whether the file gave each listed app a cap, and said whether singles count.
        let mut capped: Vec<(bool, bool)> = Vec::with_capacity(parsed.apps.len());
        for (i, a) in parsed.apps.into_iter().enumerate() {
            let id = AppId::new(&a.appid).map_err(|e| invalid(format!("apps[{i}].appid: {e}")))?;
            if list.iter().any(|x| x.id == id) {
                return Err(invalid(format!("apps[{i}]: {id} is listed twice")));
            }
            if a.send_rate == Some(0) {
                return Err(invalid(format!("apps[{i}].send_rate: must be at least 1")));
            }
            if a.default {
                flagged.push(id.clone());
            }
            let token_source = a
                .token_source
                .as_deref()
                .map(|s| {
                    TokenSource::parse(s)
                        .map_err(|e| invalid(format!("apps[{i}].token_source: {e}")))
                })
                .transpose()?;
            let templates = a
                .templates
                .map(|list| {
                    template_list(list).map_err(|e| invalid(format!("apps[{i}].templates{e}")))
                })
                .transpose()?;
            let push_token = a.push_token.filter(|s| !s.expose().is_empty());
            if let Some(t) = &push_token {
                check_push_token(t.expose())
                    .map_err(|e| invalid(format!("apps[{i}].push_token: {e}")))?;
            }
            let encoding_aes_key = a.encoding_aes_key.filter(|s| !s.expose().is_empty());
            if let Some(k) = &encoding_aes_key {
                check_encoding_aes_key(k.expose())
                    .map_err(|e| invalid(format!("apps[{i}].encoding_aes_key: {e}")))?;
            }
            let consent_source = a
                .consent_source
                .as_deref()
                .map(|s| {
                    ConsentSource::parse(s)
                        .map_err(|e| invalid(format!("apps[{i}].consent_source: {e}")))
                })
                .transpose()?;
            let quiet_hours = a
                .quiet_hours
                .as_deref()
                .map(|s| {
                    QuietWindow::parse(s).map_err(|e| {
                        invalid(format!("apps[{i}].quiet_hours: {}", e.without_value()))
                    })
                })
                .transpose()?;
            let timezone = a
                .timezone
                .as_deref()
                .map(|s| {
                    AppZone::parse(s)
                        .map_err(|e| invalid(format!("apps[{i}].timezone: {}", e.without_value())))
                })
                .transpose()?;
            if a.max_campaign_messages_per_user_per_day == Some(0) {
                return Err(invalid(format!(
                    "apps[{i}].max_campaign_messages_per_user_per_day: must be at least 1 \
                     (leave it out for no cap)"
                )));
            }
            list.push(AppConfig {
                id,
                secret: a.secret.filter(|s| !s.expose().is_empty()),
                send_rate: a.send_rate.unwrap_or(send_rate),
                token_source: token_source.unwrap_or_default(),
                templates,
                push_token,
                encoding_aes_key,
                consent_source: consent_source.unwrap_or_default(),
                frequency_cap: FrequencyCap {
                    per_day: a.max_campaign_messages_per_user_per_day,
                    singles: a.cap_single_messages.unwrap_or(false),
                },
                quiet_hours,
                timezone: timezone.clone().unwrap_or_default(),
            });
            quiet_given.push((quiet_hours.is_some(), timezone.is_some()));
            capped.push((
                a.max_campaign_messages_per_user_per_day.is_some(),
                a.cap_single_messages.is_some(),
            ));
            sourced.push(a.token_source.is_some());
            consent_sourced.push(a.consent_source.is_some());
        }
        if let Some(id) = &var_id {
            match list.iter().position(|a| a.id == *id) {
                Some(at) => {
                    let listed = &mut list[at];
                    match (&listed.secret, &var_secret) {
                        (Some(a), Some(b)) if a != b => {
                            return Err(invalid(format!(
                                "{id} has a different secret in WXPUSH_APP_SECRET; keep one"
                            )))
                        }
                        (None, Some(s)) => listed.secret = Some(s.clone()),
                        _ => {}
                    }
                    match (sourced[at], &var_source) {
                        (true, Some(v)) if *v != listed.token_source => {
                            return Err(invalid(format!(
                                "{id} has token_source = \"{}\" but {TOKEN_SOURCE_VAR} says \
                                 \"{v}\"; keep one",
                                listed.token_source
                            )))
                        }
                        (false, Some(v)) => listed.token_source = v.clone(),
                        _ => {}
                    }
                    for (field, given, key, var) in [
                        (
                            &mut listed.push_token,
                            &var_push_token,
                            "push_token",
                            PUSH_TOKEN_VAR,
                        ),
                        (
                            &mut listed.encoding_aes_key,
                            &var_aes_key,
                            "encoding_aes_key",
                            ENCODING_AES_KEY_VAR,
                        ),
                    ] {
                        match (&*field, given) {
                            (Some(a), Some(b)) if a != b => {
                                return Err(invalid(format!(
                                    "{id} has a different {key} in {var}; keep one"
                                )))
                            }
                            (None, Some(s)) => *field = Some(s.clone()),
                            _ => {}
                        }
                    }
                    match (consent_sourced[at], var_consent) {
                        (true, Some(v)) if v != listed.consent_source => {
                            return Err(invalid(format!(
                                "{id} has consent_source = \"{}\" but {CONSENT_SOURCE_VAR} \
                                 says \"{v}\"; keep one",
                                listed.consent_source
                            )))
                        }
                        (false, Some(v)) => listed.consent_source = v,
                        _ => {}
                    }
                    let (file_quiet, file_zone) = quiet_given[at];
                    match (file_quiet, var_quiet) {
                        (true, Some(v)) if Some(v) != listed.quiet_hours => {
                            return Err(invalid(format!(
                                "{id} has other quiet_hours than {QUIET_HOURS_VAR}; keep one"
                            )))
                        }
                        (false, Some(v)) => listed.quiet_hours = Some(v),
                        _ => {}
                    }
                    match (file_zone, &var_zone) {
                        (true, Some(v)) if *v != listed.timezone => {
                            return Err(invalid(format!(
                                "{id} has another timezone than {TIMEZONE_VAR}; keep one"
                            )))
                        }
                        (false, Some(v)) => listed.timezone = v.clone(),
                        _ => {}
                    }
                }
                None => list.push(AppConfig {
                    token_source: var_source.unwrap_or_default(),
                    push_token: var_push_token,
                    encoding_aes_key: var_aes_key,
                    consent_source: var_consent.unwrap_or_default(),
                    quiet_hours: var_quiet,
                    timezone: var_zone.unwrap_or_default(),
                    ..AppConfig::new(id.clone(), var_secret, send_rate)
                }),
            }
        }
        for (app, (per_day, singles)) in list.iter_mut().zip(
            capped
                .iter()
                .copied()
                .chain(std::iter::repeat((false, false))),
        ) {
            if !per_day {
                app.frequency_cap.per_day = vars.cap;
            }
            if !singles {
                app.frequency_cap.singles = vars.cap_singles.unwrap_or(false);
            }
        }
        for app in &list {
            check_push_keys(app)
                .map_err(|(key, reason)| invalid(format!("{}: {key}: {reason}", app.id)))?;
        }
        if list.is_empty() {
            return Err(invalid(
                "no [[apps]] listed and WXPUSH_APP_ID is not set".to_owned(),
            ));
        }

        if flagged.len() > 1 {
            return Err(invalid(format!(
                "more than one app has default = true ({})",
                join(&flagged)
            )));
        }
        let named = parsed
            .default
            .as_deref()
            .map(|s| AppId::new(s).map_err(|e| invalid(format!("default: {e}"))))
            .transpose()?;
        let file_default = match (named, flagged.pop()) {
            (Some(n), Some(f)) if n != f => {
                return Err(invalid(format!(
                    "default = \"{n}\" but {f} has default = true"
                )))
            }
            (Some(n), _) => Some(n),
            (None, f) => f,
        };
        let default = match (file_default, var_id) {
            (Some(f), Some(v)) if f != v => {
                return Err(invalid(format!(
                    "its default app {f} is not WXPUSH_APP_ID ({v}); name the same app or \
                     leave one out"
                )))
            }
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) if list.len() == 1 => list[0].id.clone(),
            (None, None) => {
                return Err(invalid(format!(
                    "{} apps and no default: add default = \"<appid>\" or default = true to one",
                    list.len()
                )))
            }
        };
        let at = list
            .iter()
            .position(|a| a.id == default)
            .ok_or_else(|| invalid(format!("the default app {default} is not in [[apps]]")))?;
        list.swap(0, at);
        Ok(Self { list })
    }

    /// The app meant when an upload or campaign names none.
    pub fn default_app(&self) -> &AppConfig {
        &self.list[0]
    }

    /// The default app's id.
    pub fn default_id(&self) -> &AppId {
        &self.list[0].id
    }

    /// The app with this id, if the install serves it.
    pub fn get(&self, id: &AppId) -> Option<&AppConfig> {
        self.list.iter().find(|a| a.id == *id)
    }

    /// The app a message means: the one it names, or the default when it names none.
    /// `None`: it names an app this install does not serve.
    pub fn resolve(&self, named: Option<&AppId>) -> Option<&AppConfig> {
        match named {
            None => Some(self.default_app()),
            Some(id) => self.get(id),
        }
    }

    /// Every app, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &AppConfig> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never true: an install serves at least one app.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// What an app's message push settings need of each other: secure mode's key and events as
/// the consent source both need the push Token (without it `wxpush events` cannot check a
/// request, so no event would ever arrive). The error: the key at fault and why.
fn check_push_keys(app: &AppConfig) -> Result<(), (&'static str, String)> {
    if app.push_token.is_some() {
        return Ok(());
    }
    if app.encoding_aes_key.is_some() {
        return Err((
            "encoding_aes_key",
            "is set without a push_token: secure mode signs with the Token too".to_owned(),
        ));
    }
    if app.consent_source == ConsentSource::Events {
        return Err((
            "consent_source",
            "\"events\" needs a push_token: without one `wxpush events` cannot check WeChat's \
             requests, and no consent would arrive"
                .to_owned(),
        ));
    }
    Ok(())
}

/// An app's `templates`, each a valid template id, none twice, at least one. The error is
/// what follows `apps[i].templates` in the message (`: ...` or `[j]: ...`); it never quotes
/// an id.
fn template_list(list: Vec<String>) -> Result<BTreeSet<String>, String> {
    if list.is_empty() {
        return Err(": is empty; leave the key out to accept every template".to_owned());
    }
    let mut set = BTreeSet::new();
    for (j, t) in list.into_iter().enumerate() {
        check_template_id(&t).map_err(|e| format!("[{j}]: {e}"))?;
        if !set.insert(t) {
            return Err(format!("[{j}]: listed twice"));
        }
    }
    Ok(set)
}

fn join(ids: &[AppId]) -> String {
    ids.iter().map(AppId::as_str).collect::<Vec<_>>().join(", ")
}

/// Every secret in an apps file's text, for the log scrubber: the value of every key named in
/// [`SECRET_KEYS`], at any depth, whatever its type. Read leniently: from the parsed file when
/// it parses, and line by line (`secret = ...`, the value up to its closing quote or the end of
/// the line) in any case, so that a file that does not parse still gives its secrets.
pub fn file_secrets(text: &str) -> Vec<Secret> {
    fn walk(v: &toml::Value, under_secret_key: bool, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(v, SECRET_KEYS.contains(&k.as_str()), out);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, under_secret_key, out)),
            toml::Value::String(s) if under_secret_key => out.push(s.clone()),
            toml::Value::Integer(i) if under_secret_key => out.push(i.to_string()),
            toml::Value::Float(f) if under_secret_key => out.push(f.to_string()),
            toml::Value::Datetime(d) if under_secret_key => out.push(d.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        walk(&toml::Value::Table(table), false, &mut out);
    }
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if !SECRET_KEYS.contains(&key) {
            continue;
        }
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let inner = &value[1..];
                inner.find(q).map_or(inner, |end| &inner[..end])
            }
            _ => value,
        };
        out.push(value.trim().to_owned());
    }
    out.sort();
    out.dedup();
    out.into_iter()
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect()
}

/// A TOML error as one line: the line, the key when there is one, and the kind of problem;
/// never the offending value, which could be a secret. toml and serde quote values
/// (`invalid type: integer `98765432109876`, expected a string`, `unknown variant `x``): those
/// quotes are cut out, and so is the value's own text wherever it still appears.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("not valid TOML")
        .trim();
    let message = without_quoted_values(message);
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let at_span = text.get(start..end).unwrap_or("");
    // The span is a key (an unknown field) when a bare key fills it and `=` follows it.
    let span_is_key = leading_key(&format!("{at_span} = ")).is_some_and(|k| k == at_span.trim())
        && text[end..].trim_start_matches([' ', '\t']).starts_with('=');
    let key = if span_is_key {
        Some(at_span.trim().to_owned())
    } else {
        leading_key(line_text)
    };
    // The value's own text, when the span is a value: never shown, whatever the message says.
    let mut message = message;
    let value = at_span.trim().trim_matches(|c| c == '"' || c == '\'');
    if key.as_deref() != Some(at_span.trim()) && value.len() >= 4 {
        message = message.replace(value, "(value)");
    }
    match key {
        Some(key) => format!("line {line}, key {key}: {message}"),
        None => format!("line {line}: {message}"),
    }
}

/// The key a line (or a span) starts with, when it is `key = ...` with a bare (letters,
/// digits, `_`, `-`, dotted) key: nothing else can be taken for a key, so never a value.
fn leading_key(text: &str) -> Option<String> {
    let t = text.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .unwrap_or(t.len());
    let (key, rest) = t.split_at(end);
    (!key.is_empty() && rest.trim_start().starts_with('=')).then(|| key.to_owned())
}

/// `message` with the values serde and toml quote cut out: `integer `5``, `string "x"`,
/// `boolean `true``, `floating point `1.5``, `character `c``, `unknown variant `x`` keep
/// their kind only. Quoted field names (`unknown field `x``, `expected one of `a``) stay.
fn without_quoted_values(message: &str) -> String {
    const KINDS: &[&str] = &[
        "integer ",
        "string ",
        "boolean ",
        "floating point ",
        "character ",
        "unknown variant ",
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for kind in KINDS {
            let Some(after) = rest.strip_prefix(kind) else {
                continue;
            };
            let Some(q) = after
                .chars()
                .next()
                .filter(|c| matches!(c, '`' | '"' | '\''))
            else {
                continue;
            };
            out.push_str(kind.trim_end());
            rest = skip_quoted(&after[1..], q);
            continue 'scan;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What follows the closing `q` of a quoted text that `s` starts inside (a `\`-escaped `q`
/// does not close it); the empty string when it is never closed.
fn skip_quoted(s: &str, q: char) -> &str {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == q && !escaped => return &s[i + c.len_utf8()..],
            _ => escaped = false,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "wx1234567890abcdef";
    const B: &str = "wxfedcba0987654321";

    fn vars(id: Option<&str>, secret: Option<&str>) -> VarApp {
        VarApp {
            id: id.map(str::to_owned),
            secret: secret.map(Secret::new),
            ..VarApp::default()
        }
    }

    fn build(id: Option<&str>, secret: Option<&str>, file: &str) -> Result<Apps, String> {
        Apps::build(vars(id, secret), Some(("/etc/wxpush.toml", file)), 500)
            .map_err(|e| e.to_string())
    }

    fn ids(apps: &Apps) -> Vec<&str> {
        apps.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn the_contract_example_is_understood() {
        let apps = build(
            None,
            None,
            &format!(
                "default = \"{A}\"\n[[apps]]\nappid = \"{A}\"\nsecret = \"sa\"\ndefault = true\n\n\
                 [[apps]]\nappid = \"{B}\"\nsecret = \"sb\"\nsend_rate = 20\n"
            ),
        )
        .unwrap();
        assert_eq!(ids(&apps), [A, B]);
        assert_eq!(apps.default_id().as_str(), A);
        let b = apps.get(&AppId::new(B).unwrap()).unwrap();
        assert_eq!(b.secret.as_ref().map(Secret::expose), Some("sb"));
        assert_eq!(b.send_rate, 20);
        assert_eq!(
            apps.default_app().send_rate,
            500,
            "WXPUSH_SEND_RATE by default"
        );
        assert_eq!(apps.resolve(None).unwrap().id.as_str(), A);
        assert!(apps
            .resolve(Some(&AppId::new("wxother").unwrap()))
            .is_none());
    }

    #[test]
    fn the_default_comes_from_the_file_the_variable_or_the_only_app() {
        let two = format!("[[apps]]\nappid = \"{A}\"\n[[apps]]\nappid = \"{B}\"\n");
        let by_name = build(None, None, &format!("default = \"{B}\"\n{two}")).unwrap();
        assert_eq!(ids(&by_name), [B, A]);
        let by_var = build(Some(B), None, &two).unwrap();
        assert_eq!(by_var.default_id().as_str(), B);
        assert_eq!(by_var.len(), 2);
        let only = build(None, None, &format!("[[apps]]\nappid = \"{B}\"\n")).unwrap();
        assert_eq!(only.default_id().as_str(), B);
        let e = build(None, None, &two).unwrap_err();
        assert_eq!(
            e,
            "WXPUSH_CONFIG is invalid: /etc/wxpush.toml: 2 apps and no default: add default = \
             \"<appid>\" or default = true to one"
        );
    }

    #[test]
    fn the_variables_app_joins_the_list_and_fills_a_missing_secret() {
        let apps = build(
            Some(A),
            Some("from-env"),
            &format!("[[apps]]\nappid = \"{A}\"\n[[apps]]\nappid = \"{B}\"\nsecret = \"sb\"\n"),
        )
        .unwrap();
        assert_eq!(
            apps.default_app().secret.as_ref().unwrap().expose(),
            "from-env"
        );
        let joined = build(Some(B), Some("sb"), &format!("[[apps]]\nappid = \"{A}\"\n")).unwrap();
        assert_eq!(ids(&joined), [B, A], "the variables' app is the default");
        // Without a file, the variables alone, as in contract section 2.
        let single = Apps::build(vars(Some(A), Some("s")), None, 7).unwrap();
        assert_eq!(ids(&single), [A]);
        assert_eq!(single.default_app().send_rate, 7);
    }

    #[test]
    fn anything_unclear_is_one_line_naming_the_file_and_never_a_secret() {
        let cases = [
            (
                format!("[[apps]]\nappid = \"{A}\"\nsecret = \"s3cr3t\"\nsned_rate = 5\n"),
                "line 4, key sned_rate: unknown field `sned_rate`",
            ),
            (
                format!("[[apps]]\nappid = \"{A}\"\n[[apps]]\nappid = \"{A}\"\n"),
                "apps[1]: wx1234567890abcdef is listed twice",
            ),
            ("[[apps]]\nappid = \"wx 1\"\n".to_owned(), "apps[0].appid: "),
            (
                format!("[[apps]]\nappid = \"{A}\"\nsend_rate = 0\n"),
                "apps[0].send_rate: must be at least 1",
            ),
            (
                format!(
                    "[[apps]]\nappid = \"{A}\"\ndefault = true\n[[apps]]\nappid = \"{B}\"\n\
                     default = true\n"
                ),
                "more than one app has default = true",
            ),
            (
                format!("default = \"{B}\"\n[[apps]]\nappid = \"{A}\"\n"),
                "the default app wxfedcba0987654321 is not in [[apps]]",
            ),
            ("secret = \"s3cr3t\n".to_owned(), "line 1, key secret: "),
            ("".to_owned(), "no [[apps]] listed"),
        ];
        for (file, expected) in cases {
            let e = build(None, None, &file).unwrap_err();
            assert!(
                e.starts_with("WXPUSH_CONFIG is invalid: /etc/wxpush.toml: "),
                "{e}"
            );
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
            assert!(!e.contains('\n'), "{e:?}");
            assert!(!e.contains("s3cr3t"), "{e:?}");
        }
    }

    fn with_source(id: Option<&str>, source: &str) -> VarApp {
        VarApp {
            token_source: Some(source.to_owned()),
            ..vars(id, None)
        }
    }

    #[test]
    fn each_app_has_a_token_source_stable_by_default() {
        let apps = build(
            None,
            None,
            &format!(
                "default = \"{A}\"\n[[apps]]\nappid = \"{A}\"\n[[apps]]\nappid = \"{B}\"\n\
                 token_source = \"https://tokens.example.com/{B}?key=k\"\n\
                 [[apps]]\nappid = \"wxc\"\ntoken_source = \"classic\"\n"
            ),
        )
        .unwrap();
        let sources: Vec<String> = apps.iter().map(|a| a.token_source.to_string()).collect();
        assert_eq!(
            sources,
            [
                "stable",
                &format!("https://tokens.example.com/{B}?***"),
                "classic"
            ]
        );
        // The single app's variable, alone or filling in what the file leaves out.
        let single = Apps::build(with_source(Some(A), "classic"), None, 5).unwrap();
        assert_eq!(single.default_app().token_source, TokenSource::Classic);
        let plain = Apps::build(vars(Some(A), None), None, 5).unwrap();
        assert_eq!(plain.default_app().token_source, TokenSource::Stable);
        let filled = Apps::build(
            with_source(Some(A), "classic"),
            Some((
                "/f.toml",
                &format!("[[apps]]\nappid = \"{A}\"\n[[apps]]\nappid = \"{B}\"\n"),
            )),
            5,
        )
        .unwrap();
        let of = |apps: &Apps, id: &str| {
            apps.get(&AppId::new(id).unwrap())
                .unwrap()
                .token_source
                .clone()
        };
        assert_eq!(of(&filled, A), TokenSource::Classic);
        assert_eq!(
            of(&filled, B),
            TokenSource::Stable,
            "the variable is A's only"
        );
        let same = Apps::build(
            with_source(Some(A), "classic"),
            Some((
                "/f.toml",
                &format!("[[apps]]\nappid = \"{A}\"\ntoken_source = \"classic\"\n"),
            )),
            5,
        )
        .unwrap();
        assert_eq!(of(&same, A), TokenSource::Classic);
    }

    #[test]
    fn a_bad_or_unclear_token_source_is_one_line_naming_the_key_or_variable() {
        let e = build(
            None,
            None,
            &format!("[[apps]]\nappid = \"{A}\"\ntoken_source = \"stabel\"\n"),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "WXPUSH_CONFIG is invalid: /etc/wxpush.toml: apps[0].token_source: 'stabel' is not \
             \"stable\", \"classic\" or an https:// URL of a token service"
        );
        let e = build(
            None,
            None,
            &format!(
                "[[apps]]\nappid = \"{A}\"\ntoken_source = \"http://tokens.example.com/t?key=s3cr3t\"\n"
            ),
        )
        .unwrap_err();
        assert!(
            e.contains("apps[0].token_source: http://tokens.example.com/t?***: http:// is only"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = Apps::build(with_source(Some(A), "sometimes"), None, 5)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("WXPUSH_TOKEN_SOURCE is invalid: 'sometimes' is not"),
            "{e}"
        );
        let e = Apps::build(
            with_source(Some(A), "stable"),
            Some((
                "/f.toml",
                &format!("[[apps]]\nappid = \"{A}\"\ntoken_source = \"classic\"\n"),
            )),
            5,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("wx1234567890abcdef has token_source = \"classic\" but WXPUSH_TOKEN_SOURCE says \"stable\""),
            "{e}"
        );
        let e = Apps::build(
            with_source(None, "classic"),
            Some(("/f.toml", &format!("[[apps]]\nappid = \"{A}\"\n"))),
            5,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "WXPUSH_TOKEN_SOURCE is invalid: it is the token source of WXPUSH_APP_ID's app"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn an_apps_templates_bound_the_consents_it_keeps() {
        let apps = build(
            Some(B),
            None,
            &format!(
                "[[apps]]\nappid = \"{A}\"\n\
                 templates = [\"TPL_A\", \"tpl-b_2\"]\n[[apps]]\nappid = \"wxc\"\n"
            ),
        )
        .unwrap();
        let of = |id: &str| apps.get(&AppId::new(id).unwrap()).unwrap().clone();
        let a = of(A);
        assert_eq!(
            a.templates.iter().flatten().collect::<Vec<_>>(),
            ["TPL_A", "tpl-b_2"]
        );
        assert!(a.accepts_template("TPL_A") && a.accepts_template("tpl-b_2"));
        assert!(!a.accepts_template("TPL_C") && !a.accepts_template("tpl_a"));
        // Without the key, and for the variables' app, every template is accepted.
        for id in ["wxc", B] {
            assert_eq!(of(id).templates, None, "{id}");
            assert!(of(id).accepts_template("TPL_ANY"), "{id}");
        }
        let single = Apps::build(vars(Some(A), None), None, 5).unwrap();
        assert!(single.default_app().accepts_template("TPL_ANY"));
    }

    #[test]
    fn a_bad_templates_list_is_one_line_naming_the_key_and_never_the_id() {
        let cases = [
            (
                "templates = []",
                "apps[0].templates: is empty; leave the key out to accept every template",
            ),
            (
                "templates = [\"TPL_A\", \"TPL s3cr3t\"]",
                "apps[0].templates[1]: templateId contains a character that is not allowed",
            ),
            (
                "templates = [\"\"]",
                "apps[0].templates[0]: templateId is empty",
            ),
            (
                "templates = [\"TPL_A\", \"TPL_B\", \"TPL_A\"]",
                "apps[0].templates[2]: listed twice",
            ),
            (
                "templates = \"TPL_A\"",
                "line 3, key templates: invalid type: string, expected a sequence",
            ),
            (
                "templates = [\"TPL_A\", 7]",
                "line 3, key templates: invalid type: integer, expected a string",
            ),
        ];
        let long = format!("templates = [\"{}\"]", "T".repeat(200));
        let cases = cases
            .iter()
            .map(|(k, e)| (k.to_string(), *e))
            .chain([(long, "apps[0].templates[0]: templateId is 200 bytes long")]);
        for (line, expected) in cases {
            let e = build(None, None, &format!("[[apps]]\nappid = \"{A}\"\n{line}\n")).unwrap_err();
            assert!(
                e.starts_with("WXPUSH_CONFIG is invalid: /etc/wxpush.toml: "),
                "{e}"
            );
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
            assert!(
                !e.contains('\n') && !e.contains("s3cr3t") && !e.contains("TTTT"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_file_and_the_variables_must_agree() {
        let e = build(
            Some(A),
            Some("first-secret"),
            &format!("[[apps]]\nappid = \"{A}\"\nsecret = \"second-secret\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("different secret in WXPUSH_APP_SECRET"), "{e}");
        assert!(!e.contains("-secret"), "{e}");
        let e = build(
            Some(A),
            None,
            &format!("default = \"{B}\"\n[[apps]]\nappid = \"{B}\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("is not WXPUSH_APP_ID"), "{e}");
        let e = Apps::build(vars(None, None), None, 500).unwrap_err();
        assert!(e.to_string().starts_with("WXPUSH_APP_ID is not set"), "{e}");
    }

    #[test]
    fn toml_errors_say_line_key_and_kind_never_the_value() {
        let secret = "98765432109876";
        let cases = [
            // An integer where a string belongs.
            (
                format!("[[apps]]\nappid = \"{A}\"\nsecret = {secret}\n"),
                "line 3, key secret: invalid type: integer, expected a string",
            ),
            // A string where a number belongs.
            (
                format!("[[apps]]\nappid = \"{A}\"\nsend_rate = \"s3cr3t-{secret}\"\n"),
                "line 3, key send_rate: invalid type: string, expected u32",
            ),
            // A number too large for its key.
            (
                format!("[[apps]]\nappid = \"{A}\"\nsend_rate = {secret}\n"),
                "line 3, key send_rate: invalid value: integer, expected u32",
            ),
            // An array where a string belongs, and a table.
            (
                format!("[[apps]]\nappid = \"{A}\"\nsecret = [\"{secret}\", 1]\n"),
                "line 3, key secret: invalid type: sequence, expected a string",
            ),
            // A boolean where a string belongs, inside an inline table.
            (
                format!("apps = [{{ appid = \"{A}\", secret = true }}]\ndefault = \"{secret}x\"\n"),
                "line 1, key apps: invalid type: boolean, expected a string",
            ),
            // An unterminated string.
            (
                format!("[[apps]]\nappid = \"{A}\"\nsecret = \"{secret}\n"),
                "line 3, key secret: ",
            ),
            // A string with a quote escaped inside it, where a boolean belongs.
            (
                format!("[[apps]]\nappid = \"{A}\"\ndefault = \"a\\\"{secret}\"\n"),
                "line 3, key default: invalid type: string, expected a boolean",
            ),
        ];
        for (file, expected) in cases {
            let e = build(None, None, &file).unwrap_err();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
            assert!(!e.contains(secret), "{e:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn every_secret_of_a_file_is_found_even_when_it_does_not_parse() {
        let secrets = |text: &str| -> Vec<String> {
            file_secrets(text)
                .iter()
                .map(|s| s.expose().to_owned())
                .collect()
        };
        let good = format!(
            "[[apps]]\nappid = \"{A}\"\nsecret = \"sa/+@%2F\"\n\
             [[apps]]\nappid = \"{B}\"\n\"secret\" = 'sb'\n\
             [extra]\napps = [{{ secret = 12345678 }}]\n"
        );
        assert_eq!(secrets(&good), ["12345678", "sa/+@%2F", "sb"]);
        assert_eq!(
            secrets("[[apps]]\nsecret = \"unterminated\nsecret = 98765\n"),
            ["98765", "unterminated"]
        );
        assert!(secrets(&format!("[[apps]]\nappid = \"{A}\"\n")).is_empty());
    }

    const KEY43: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn push_settings_per_app_and_from_the_single_apps_variables() {
        let apps = build(
            None,
            None,
            &format!(
                "default = \"{A}\"\n[[apps]]\nappid = \"{A}\"\npush_token = \"tok3n\"\n\
                 encoding_aes_key = \"{KEY43}\"\nconsent_source = \"events\"\n\
                 [[apps]]\nappid = \"{B}\"\n"
            ),
        )
        .unwrap();
        let a = apps.default_app();
        assert_eq!(a.push_token.as_ref().map(Secret::expose), Some("tok3n"));
        assert_eq!(a.encoding_aes_key.as_ref().map(Secret::expose), Some(KEY43));
        assert_eq!(a.consent_source, ConsentSource::Events);
        let b = apps.get(&AppId::new(B).unwrap()).unwrap();
        assert_eq!(b.push_token, None);
        assert_eq!(b.consent_source, ConsentSource::Client, "client by default");
        assert!(
            !format!("{apps:?}").contains("tok3n"),
            "Debug hides the token"
        );
        assert!(!format!("{apps:?}").contains(KEY43), "Debug hides the key");

        let single = Apps::build(
            VarApp {
                push_token: Some(Secret::new("tok3n")),
                encoding_aes_key: Some(Secret::new(KEY43)),
                consent_source: Some("events".into()),
                ..vars(Some(A), None)
            },
            None,
            5,
        )
        .unwrap();
        assert_eq!(single.default_app().consent_source, ConsentSource::Events);
        assert_eq!(
            single.default_app().push_token.as_ref().map(Secret::expose),
            Some("tok3n")
        );
        // The variables fill in the file's app, or disagree with it.
        let filled = Apps::build(
            VarApp {
                push_token: Some(Secret::new("tok3n")),
                ..vars(Some(A), None)
            },
            Some(("/f.toml", &format!("[[apps]]\nappid = \"{A}\"\n"))),
            5,
        )
        .unwrap();
        assert!(filled.default_app().push_token.is_some());
        let e = Apps::build(
            VarApp {
                consent_source: Some("client".into()),
                ..vars(Some(A), None)
            },
            Some((
                "/f.toml",
                &format!(
                    "[[apps]]\nappid = \"{A}\"\npush_token = \"tok3n\"\n\
                     consent_source = \"events\"\n"
                ),
            )),
            5,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("consent_source = \"events\" but WXPUSH_CONSENT_SOURCE"),
            "{e}"
        );
    }

    #[test]
    fn bad_push_settings_are_one_line_never_quoting_the_secret() {
        let cases = [
            (
                "push_token = \"s3cr3t\"\nencoding_aes_key = \"s3cr3tTooShort\"".to_owned(),
                "apps[0].encoding_aes_key: is not 43 characters of base64 (it has 14 characters)",
            ),
            (
                format!(
                    "push_token = \"s3cr3t\"\nencoding_aes_key = \"{}!\"",
                    &KEY43[..42]
                ),
                "apps[0].encoding_aes_key: is not 43 characters of base64",
            ),
            (
                "push_token = \"s3cr3t token\"".to_owned(),
                "apps[0].push_token: is not 3 to 32 letters or digits",
            ),
            (
                format!("encoding_aes_key = \"{KEY43}\""),
                "wx1234567890abcdef: encoding_aes_key: is set without a push_token",
            ),
            (
                "consent_source = \"events\"".to_owned(),
                "wx1234567890abcdef: consent_source: \"events\" needs a push_token",
            ),
            (
                "consent_source = \"s3cr3t\"".to_owned(),
                "apps[0].consent_source: is not \"client\" or \"events\"",
            ),
        ];
        for (line, expected) in cases {
            let e = build(None, None, &format!("[[apps]]\nappid = \"{A}\"\n{line}\n")).unwrap_err();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
            assert!(!e.contains('\n') && !e.contains("s3cr3t"), "{e:?}");
        }
        let single = |v: VarApp| Apps::build(v, None, 5).unwrap_err().to_string();
        let e = single(VarApp {
            encoding_aes_key: Some(Secret::new("s3cr3t")),
            push_token: Some(Secret::new("tok3n")),
            ..vars(Some(A), None)
        });
        assert!(
            e.starts_with("WXPUSH_ENCODING_AES_KEY is invalid: is not 43"),
            "{e}"
        );
        let e = single(VarApp {
            consent_source: Some("events".into()),
            ..vars(Some(A), None)
        });
        assert!(
            e.starts_with("WXPUSH_CONSENT_SOURCE is invalid: \"events\" needs"),
            "{e}"
        );
        let e = Apps::build(
            VarApp {
                push_token: Some(Secret::new("tok3n")),
                ..vars(None, None)
            },
            Some(("/f.toml", &format!("[[apps]]\nappid = \"{A}\"\n"))),
            5,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("WXPUSH_PUSH_TOKEN is invalid: it is WXPUSH_APP_ID's app's"),
            "{e}"
        );
    }

    #[test]
    fn the_push_secrets_of_a_file_go_to_the_scrubber() {
        let found: Vec<String> = file_secrets(&format!(
            "[[apps]]\nappid = \"{A}\"\npush_token = \"tok3n\"\nencoding_aes_key = \"{KEY43}\"\n"
        ))
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
        assert!(found.contains(&"tok3n".to_owned()) && found.contains(&KEY43.to_owned()));
    }

    #[test]
    fn quiet_hours_and_timezone_per_app_and_from_the_single_apps_variables() {
        let apps = build(
            None,
            None,
            &format!(
                "default = \"{A}\"\n[[apps]]\nappid = \"{A}\"\nquiet_hours = \"22:00-08:00\"\n\
                 [[apps]]\nappid = \"{B}\"\nquiet_hours = \"23:30-07:00:30\"\n\
                 timezone = \"Europe/Berlin\"\n[[apps]]\nappid = \"wxc\"\n"
            ),
        )
        .unwrap();
        let a = apps.default_app().quiet().expect("quiet hours");
        assert_eq!(
            (a.window.to_string(), a.zone.name()),
            ("22:00-08:00".to_owned(), "Asia/Shanghai"),
            "the default zone"
        );
        let b = apps.get(&AppId::new(B).unwrap()).unwrap().quiet().unwrap();
        assert_eq!(
            (b.window.to_string(), b.zone.name()),
            ("23:30-07:00:30".to_owned(), "Europe/Berlin")
        );
        assert_eq!(apps.get(&AppId::new("wxc").unwrap()).unwrap().quiet(), None);

        let single = Apps::build(
            VarApp {
                quiet_hours: Some("21:00-09:00".into()),
                timezone: Some("America/New_York".into()),
                ..vars(Some(A), None)
            },
            None,
            5,
        )
        .unwrap();
        let q = single.default_app().quiet().unwrap();
        assert_eq!(
            (q.window.to_string(), q.zone.name()),
            ("21:00-09:00".to_owned(), "America/New_York")
        );
        // The variables fill in the file's app, or disagree with it.
        let file = format!("[[apps]]\nappid = \"{A}\"\nquiet_hours = \"22:00-08:00\"\n");
        let with = |quiet: &str, zone: Option<&str>| {
            Apps::build(
                VarApp {
                    quiet_hours: Some(quiet.into()),
                    timezone: zone.map(str::to_owned),
                    ..vars(Some(A), None)
                },
                Some(("/etc/wxpush.toml", &file)),
                5,
            )
            .map_err(|e| e.to_string())
        };
        let filled = with("22:00-08:00", Some("Asia/Tokyo")).unwrap();
        assert_eq!(filled.default_app().timezone.name(), "Asia/Tokyo");
        assert_eq!(
            with("23:00-08:00", None).unwrap_err(),
            format!(
                "WXPUSH_CONFIG is invalid: /etc/wxpush.toml: {A} has other quiet_hours than \
                 WXPUSH_QUIET_HOURS; keep one"
            )
        );
    }

    #[test]
    fn bad_quiet_hours_or_timezones_are_one_line_naming_the_key_or_variable() {
        for (file, want) in [
            (
                format!("[[apps]]\nappid = \"{A}\"\nquiet_hours = \"22h-8h\"\n"),
                "WXPUSH_CONFIG is invalid: /etc/wxpush.toml: apps[0].quiet_hours: is not a \
                 window HH:MM-HH:MM (or HH:MM:SS-HH:MM:SS), e.g. \"22:00-08:00\"",
            ),
            (
                format!("[[apps]]\nappid = \"{A}\"\nquiet_hours = \"08:00-08:00\"\n"),
                "WXPUSH_CONFIG is invalid: /etc/wxpush.toml: apps[0].quiet_hours: starts and \
                 ends at the same time: give a window of at least one second",
            ),
            (
                format!("[[apps]]\nappid = \"{A}\"\ntimezone = \"Asia/Shangai\"\n"),
                "WXPUSH_CONFIG is invalid: /etc/wxpush.toml: apps[0].timezone: is not a time \
                 zone of the tz database (e.g. \"Asia/Shanghai\")",
            ),
        ] {
            let e = build(None, None, &file).unwrap_err();
            assert_eq!(e, want);
            assert!(!e.contains("22h") && !e.contains("Shangai"), "{e}");
        }
        let var = |quiet: Option<&str>, zone: Option<&str>| {
            Apps::build(
                VarApp {
                    quiet_hours: quiet.map(str::to_owned),
                    timezone: zone.map(str::to_owned),
                    ..vars(Some(A), None)
                },
                None,
                5,
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            var(Some("22:00"), None),
            "WXPUSH_QUIET_HOURS is invalid: '22:00' is not a window HH:MM-HH:MM (or \
             HH:MM:SS-HH:MM:SS), e.g. \"22:00-08:00\""
        );
        assert_eq!(
            var(None, Some("Mars/Olympus")),
            "WXPUSH_TIMEZONE is invalid: 'Mars/Olympus' is not a time zone of the tz database \
             (e.g. \"Asia/Shanghai\", \"Europe/Berlin\")"
        );
        // Whose they are must be clear when a file lists the apps.
        let e = Apps::build(
            VarApp {
                quiet_hours: Some("22:00-08:00".into()),
                ..VarApp::default()
            },
            Some(("/etc/wxpush.toml", &format!("[[apps]]\nappid = \"{A}\"\n"))),
            5,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("WXPUSH_QUIET_HOURS is invalid: it is WXPUSH_APP_ID's app's"),
            "{e}"
        );
    }
}
