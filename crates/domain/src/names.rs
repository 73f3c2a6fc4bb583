//! Validated names: the install's namespace, a mini program's appid, a user's openId.
//!
//! Each newtype guarantees what the storage and broker layers rely on (for example that a
//! namespace can prefix a Redis key and a queue name, and that no name can open or close a
//! Redis Cluster hash tag where it would change the slot). It must not know how those layers
//! build their keys.
//!
//! - [`Namespace`] and [`AppId`]: letters, digits, `_` and `-` only, so they are safe anywhere
//!   in a key, a queue name or a glob pattern, and cannot open or close a hash tag.
//! - [`OpenId`] (and campaign ids, [`crate::job::check_campaign_id`]): printable ASCII without
//!   spaces, at most 128 bytes. Whitespace, newlines, NUL and every other control character,
//!   and anything non-ASCII are refused, so an accepted id cannot split a log line or a
//!   header, nor a campaign-mark field (`"<campaignId> o"`). Key punctuation (`:`, `{`, `}`,
//!   `*`, `?`, `[`) is accepted, as the contract allows, because the key layouts keep it
//!   harmless: an openId or campaign id is always the last part of its key, after a fixed
//!   prefix and after the key's hash tag (`{<app>.<shard>}`) where it has one, so two
//!   different ids never give the same key and an id cannot change a key's slot; and no key
//!   is ever looked up by a glob pattern built from one. `tests/e2e/hostile.rs` checks this
//!   against the real key builders and Redis.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long, over the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} contains a character that is not allowed ({allowed})")]
    BadChar {
        what: &'static str,
        allowed: &'static str,
    },
}

fn check(
    what: &'static str,
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    if !s.chars().all(ok) {
        return Err(NameError::BadChar { what, allowed });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// Prefix of every Redis key and every exchange and queue name of one install
    /// (`WXPUSH_NAMESPACE`): letters, digits, `_` and `-`, at most 64 bytes.
    Namespace
);
name_type!(
    /// A mini program's appid (`wx` followed by 16 hex digits in practice): letters, digits,
    /// `_` and `-`, at most 64 bytes.
    AppId
);
name_type!(
    /// A user's openId within one mini program (28 characters in practice): printable ASCII
    /// without spaces, at most 128 bytes.
    OpenId
);

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Namespace {
    pub fn new(s: &str) -> Result<Self, NameError> {
        check("namespace", s, 64, "letters, digits, _ and -", is_word_char)?;
        Ok(Self(s.to_owned()))
    }
}

impl AppId {
    pub fn new(s: &str) -> Result<Self, NameError> {
        check("appId", s, 64, "letters, digits, _ and -", is_word_char)?;
        Ok(Self(s.to_owned()))
    }
}

impl OpenId {
    pub fn new(s: &str) -> Result<Self, NameError> {
        check("openId", s, 128, "printable ASCII without spaces", |c| {
            c.is_ascii_graphic()
        })?;
        Ok(Self(s.to_owned()))
    }

    /// The openId with its middle hidden, for logs: `oLvT…3Abc`.
    pub fn masked(&self) -> String {
        let s = &self.0;
        if s.len() <= 8 {
            return format!("…{}", &s[s.len().saturating_sub(2)..]);
        }
        format!("{}…{}", &s[..4], &s[s.len() - 4..])
    }
}

/// Hostile values for the names that become parts of Redis keys (openIds, campaign ids),
/// shared by the tests of every message that carries one.
#[cfg(test)]
pub(crate) mod hostile {
    /// What the openId rules make of a value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Verdict {
        Accepted,
        Empty,
        TooLong,
        BadChar,
    }

    /// Each hostile value with its verdict. Accepted ones hold key punctuation only.
    pub(crate) fn ids() -> Vec<(String, Verdict)> {
        use Verdict::*;
        let fixed: &[(&str, Verdict)] = &[
            // Key punctuation: accepted (the key layouts keep it harmless).
            ("oHost:colon", Accepted),
            ("oHost:c:{wx.1}:oOther", Accepted),
            ("{oHostTag}", Accepted),
            ("oHost{", Accepted),
            ("oHost}", Accepted),
            ("{}", Accepted),
            ("oHost*", Accepted),
            ("*", Accepted),
            ("oHost?", Accepted),
            ("oHost[a-z]", Accepted),
            ("oHost]", Accepted),
            ("oHost\\", Accepted),
            ("oHost\"quote", Accepted),
            ("oHost%2F..%2F", Accepted),
            // Whitespace, control characters, non-ASCII: refused.
            ("oHost space", BadChar),
            (" ", BadChar),
            ("oHost\ttab", BadChar),
            ("oHost\nnewline", BadChar),
            ("oHost\r\n", BadChar),
            ("oHost\u{0}nul", BadChar),
            ("\u{0}", BadChar),
            ("oHost\u{7f}", BadChar),
            ("oHost\u{1b}[31m", BadChar),
            ("oHost\u{85}", BadChar),
            ("oHost\u{a0}nbsp", BadChar),
            ("oHost\u{200b}", BadChar),
            ("oHost\u{2028}", BadChar),
            ("\u{feff}oHost", BadChar),
            ("oHost\u{ff1a}", BadChar),
            ("ｏHost", BadChar),
            ("中文", BadChar),
            ("oHosté", BadChar),
            ("oHost😀", BadChar),
            ("", Empty),
        ];
        let mut out: Vec<(String, Verdict)> =
            fixed.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect();
        out.push(("o".repeat(128), Accepted));
        out.push(("o".repeat(129), TooLong));
        out.push(("o".repeat(100_000), TooLong));
        // Over-long is found before the characters: 65 × 2 bytes.
        out.push(("é".repeat(65), TooLong));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_rules() {
        assert!(Namespace::new("wxpush").is_ok());
        assert!(Namespace::new("wxpush-test_01").is_ok());
        assert!(matches!(Namespace::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            Namespace::new("a:b"),
            Err(NameError::BadChar { .. })
        ));
        assert!(matches!(
            Namespace::new("a{b}"),
            Err(NameError::BadChar { .. })
        ));
        assert!(matches!(
            Namespace::new(&"x".repeat(65)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn open_id_rules_and_mask() {
        let o = OpenId::new("oLvT05AbcDEFghiJKLmnoPQRstuV").unwrap();
        assert_eq!(o.masked(), "oLvT…stuV");
        assert!(OpenId::new("has space").is_err());
        assert!(OpenId::new("tab\t").is_err());
        assert!(OpenId::new("中文").is_err());
        assert!(OpenId::new("{odd}:chars*?").is_ok());
        assert_eq!(OpenId::new("abc").unwrap().masked(), "…bc");
    }

    #[test]
    fn every_hostile_open_id_gets_its_verdict() {
        use hostile::Verdict;
        for (value, verdict) in hostile::ids() {
            let got = match OpenId::new(&value) {
                Ok(id) => {
                    // What an accepted id can never hold: whitespace, controls, non-ASCII.
                    assert!(id.as_str().bytes().all(|b| (0x21..0x7f).contains(&b)));
                    assert!(id.as_str().len() <= 128);
                    Verdict::Accepted
                }
                Err(NameError::Empty { .. }) => Verdict::Empty,
                Err(NameError::TooLong { .. }) => Verdict::TooLong,
                Err(NameError::BadChar { .. }) => Verdict::BadChar,
            };
            assert_eq!(got, verdict, "{value:?}");
            // The error never echoes the value (it goes into a dead-letter header).
            if let Err(e) = OpenId::new(&value) {
                assert!(e.to_string().len() < 100, "{e}");
                assert!(value.len() < 8 || !e.to_string().contains(&value), "{e}");
            }
        }
    }

    #[test]
    fn namespaces_and_app_ids_refuse_every_hostile_value_but_word_characters() {
        for (value, _) in hostile::ids() {
            let word = !value.is_empty()
                && value.len() <= 64
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            assert_eq!(Namespace::new(&value).is_ok(), word, "{value:?}");
            assert_eq!(AppId::new(&value).is_ok(), word, "{value:?}");
        }
    }

    #[test]
    fn masking_never_panics_on_any_accepted_id() {
        for (value, verdict) in hostile::ids() {
            if verdict == hostile::Verdict::Accepted {
                let masked = OpenId::new(&value).unwrap().masked();
                assert!(masked.chars().count() <= 9, "{masked}");
            }
        }
    }
}
