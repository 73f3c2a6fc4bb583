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
//! ```
//!
//! How the two sources meet ([`Apps::build`]): the variables' app joins the file's list (its
//! secret and `WXPUSH_TOKEN_SOURCE` fill in what the file leaves out; two different secrets or
//! token sources are an error, and `WXPUSH_TOKEN_SOURCE` needs `WXPUSH_APP_ID` to say whose
//! it is when a file lists the apps); the default
//! app is the one the file names, else `WXPUSH_APP_ID`, else the only app. Anything unclear
//! (an unknown key, an app listed twice, two defaults) is refused, because a typo here would
//! send one app's messages with another's credentials.
//! This module must not read the file itself ([`crate::config`] does) nor know about roles.

use serde::Deserialize;

use crate::config::{ConfigError, Secret};
use crate::names::AppId;
use crate::token_source::TokenSource;

/// The variable giving the single app's token source.
pub const TOKEN_SOURCE_VAR: &str = "WXPUSH_TOKEN_SOURCE";

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
    pub secret: Option<String>,
    /// `WXPUSH_TOKEN_SOURCE`, unparsed.
    pub token_source: Option<String>,
}

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
    secret: Option<String>,
    #[serde(default)]
    default: bool,
    send_rate: Option<u32>,
    token_source: Option<String>,
}

impl Apps {
    /// One app, from the single-app variables (and tests), its token from `stable_token`.
    pub fn single(id: AppId, secret: Option<Secret>, send_rate: u32) -> Self {
        Self {
            list: vec![AppConfig {
                id,
                secret,
                send_rate,
                token_source: TokenSource::Stable,
            }],
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
        let var_secret = vars.secret.map(Secret::new);
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
        let Some((path, text)) = file else {
            let Some(id) = var_id else {
                return Err(ConfigError::Missing {
                    var: "WXPUSH_APP_ID",
                    hint: "set it to the mini program's appid (or list several apps in a \
                           WXPUSH_CONFIG file); credentials are kept per app",
                });
            };
            let mut single = Self::single(id, var_secret, send_rate);
            single.list[0].token_source = var_source.unwrap_or_default();
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
        let invalid = |reason: String| ConfigError::Invalid {
            var: CONFIG_FILE_VAR,
            reason: format!("{path}: {reason}"),
        };
        let parsed: FileConfig = toml::from_str(text).map_err(|e| invalid(toml_error(text, &e)))?;

        let mut list: Vec<AppConfig> = Vec::with_capacity(parsed.apps.len() + 1);
        // Whether the file gave each listed app a token_source.
        let mut sourced: Vec<bool> = Vec::with_capacity(parsed.apps.len());
        let mut flagged: Vec<AppId> = Vec::new();
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
            list.push(AppConfig {
                id,
                secret: a.secret.filter(|s| !s.is_empty()).map(Secret::new),
                send_rate: a.send_rate.unwrap_or(send_rate),
                token_source: token_source.unwrap_or_default(),
            });
            sourced.push(a.token_source.is_some());
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
                }
                None => list.push(AppConfig {
                    id: id.clone(),
                    secret: var_secret,
                    send_rate,
                    token_source: var_source.unwrap_or_default(),
                }),
            }
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

fn join(ids: &[AppId]) -> String {
    ids.iter().map(AppId::as_str).collect::<Vec<_>>().join(", ")
}

/// A TOML error as one line with its line number; never the offending text itself, which
/// could be a secret.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("not valid TOML")
        .trim();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "wx1234567890abcdef";
    const B: &str = "wxfedcba0987654321";

    fn vars(id: Option<&str>, secret: Option<&str>) -> VarApp {
        VarApp {
            id: id.map(str::to_owned),
            secret: secret.map(str::to_owned),
            token_source: None,
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
                "line 4: unknown field `sned_rate`",
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
            ("secret = \"s3cr3t\n".to_owned(), "line 1: "),
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
}
