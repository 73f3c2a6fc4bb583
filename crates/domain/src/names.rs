//! Validated names: the install's namespace, a mini program's appid, a user's openId.
//!
//! Each newtype guarantees what the storage and broker layers rely on (for example that a
//! namespace can prefix a Redis key and a queue name, and that no name can open or close a
//! Redis Cluster hash tag where it would change the slot). It must not know how those layers
//! build their keys.

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
}
