//! What Redis's own settings let it lose: `appendonly` and `maxmemory-policy`, read with
//! `CONFIG GET` where the server allows it.
//!
//! Every bank key has a TTL, so any `maxmemory-policy` but `noeviction` may evict credentials
//! and campaign marks under memory pressure (`volatile-*` picks exactly such keys); without
//! AOF a restart loses every write since the last snapshot. Managed Redis often denies
//! `CONFIG`: a setting that cannot be read is [`Setting::Unknown`], never an error. This module
//! only reads and describes; whether a role may start is the roles' decision.

use redis::Value;

use crate::Bank;

/// One Redis setting as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Known(String),
    /// Could not be read (`CONFIG` denied or renamed, say): why.
    Unknown(String),
}

impl Setting {
    pub fn known(&self) -> Option<&str> {
        match self {
            Setting::Known(v) => Some(v),
            Setting::Unknown(_) => None,
        }
    }

    /// The value, or `unknown`.
    pub fn shown(&self) -> &str {
        self.known().unwrap_or("unknown")
    }
}

/// The settings that decide whether Redis keeps what it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    pub appendonly: Setting,
    pub maxmemory_policy: Setting,
}

impl Durability {
    /// True when the policy is known to evict keys (anything but `noeviction`).
    pub fn evicts(&self) -> bool {
        self.maxmemory_policy
            .known()
            .is_some_and(|p| !p.eq_ignore_ascii_case("noeviction"))
    }

    /// True when AOF is known to be off.
    pub fn without_aof(&self) -> bool {
        self.appendonly
            .known()
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
    }

    /// Why these settings can lose acknowledged data, one sentence each (empty: they cannot,
    /// as far as they could be read).
    pub fn risks(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.evicts() {
            out.push(format!(
                "maxmemory-policy is {}: under memory pressure Redis evicts keys, and every \
                 bank key (credentials, campaign marks) has a TTL; use noeviction",
                self.maxmemory_policy.shown()
            ));
        }
        if self.without_aof() {
            out.push(
                "appendonly is no: a Redis restart loses every write since its last snapshot, \
                 acknowledged uploads and outcomes among them; use appendonly yes"
                    .to_owned(),
            );
        }
        out
    }
}

impl Bank {
    /// Reads `appendonly` and `maxmemory-policy` (`CONFIG GET`); what cannot be read is
    /// [`Setting::Unknown`].
    pub async fn durability(&self) -> Durability {
        Durability {
            appendonly: self.config_get("appendonly").await,
            maxmemory_policy: self.config_get("maxmemory-policy").await,
        }
    }

    async fn config_get(&self, name: &str) -> Setting {
        let reply: Result<Value, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.connection())
            .await;
        match reply {
            Ok(v) => value_of(&v, name)
                .map(Setting::Known)
                .unwrap_or_else(|| Setting::Unknown(format!("CONFIG GET {name} gave nothing"))),
            Err(e) => Setting::Unknown(format!("CONFIG GET {name}: {e}")),
        }
    }
}

/// The value of `name` in a `CONFIG GET` reply: `[name, value]` (RESP2) or a map (RESP3).
fn value_of(v: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Array(items) => items
            .chunks(2)
            .find(|p| p.len() == 2 && text(&p[0]).as_deref() == Some(name))
            .and_then(|p| text(&p[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(aof: Setting, policy: Setting) -> Durability {
        Durability {
            appendonly: aof,
            maxmemory_policy: policy,
        }
    }

    #[test]
    fn only_noeviction_keeps_keys_and_unknown_is_no_risk() {
        let k = |s: &str| Setting::Known(s.into());
        let safe = d(k("yes"), k("noeviction"));
        assert!(!safe.evicts() && safe.risks().is_empty());
        for p in [
            "volatile-lru",
            "allkeys-lru",
            "volatile-ttl",
            "allkeys-random",
        ] {
            let r = d(k("yes"), k(p));
            assert!(r.evicts(), "{p}");
            assert_eq!(r.risks().len(), 1);
            assert!(r.risks()[0].contains(p));
        }
        let no_aof = d(k("no"), k("noeviction"));
        assert!(no_aof.without_aof() && !no_aof.evicts());
        assert!(no_aof.risks()[0].starts_with("appendonly is no"));
        let denied = d(
            Setting::Unknown("NOPERM".into()),
            Setting::Unknown("NOPERM".into()),
        );
        assert!(!denied.evicts() && !denied.without_aof() && denied.risks().is_empty());
        assert_eq!(denied.maxmemory_policy.shown(), "unknown");
    }

    #[test]
    fn config_get_replies_are_read_in_both_protocols() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![b("maxmemory-policy"), b("volatile-lru")]);
        assert_eq!(
            value_of(&resp2, "maxmemory-policy").as_deref(),
            Some("volatile-lru")
        );
        let resp3 = Value::Map(vec![(b("appendonly"), b("yes"))]);
        assert_eq!(value_of(&resp3, "appendonly").as_deref(), Some("yes"));
        assert_eq!(value_of(&Value::Array(vec![]), "appendonly"), None);
    }
}
