//! The bank's Redis key layout, in one place.
//!
//! ```text
//! {ns}:c:{<app>.<shard>}:<openId>   zset  one user's credentials (member = encoded credential,
//!                                          score = expiry in Unix seconds; negative once spent)
//! {ns}:u:{<app>.<shard>}            zset  index shard: users holding a usable credential,
//!                                          score = expiry of their last usable one
//! {ns}:m:{<app>.<shard>}:<openId>   hash  the user's campaign marks: which campaigns reached
//!                                          them, and the credential held for one in progress
//! {ns}:cs:{<app>.<shard>}:<campaign> hash  a campaign's outcome counters for this shard's users
//! {ns}:s:{<app>.<shard>}:<openId>   hash  the user's subscribe consents: templateId → consents
//!                                          left (≥ 1; a field reaching 0 is deleted)
//! {ns}:t:{<app>.<shard>}:<templateId> set  consent index shard: the shard's users holding ≥ 1
//!                                          consent for that template
//! {ns}:tc:{<app>.<shard>}           hash  consent totals: templateId → consents held by the
//!                                          shard's users
//! {ns}:ev:{<app>.<shard>}:<openId>:<event> string  a WeChat push event applied for the
//!                                          user (`events.rs`; lives an hour)
//! {ns}:pn:{<app>.<n>}:<nonce>       string  a message push nonce seen (`<n>`: the nonce's
//!                                          shard; lives 15 minutes)
//! {ns}:camp:{<app>.<n>}:<campaign>  hash  the campaign's record (its key and fields are
//!                                          `record.rs`'s; `<n>`: the campaign id's shard)
//! ```
//!
//! A user's keys and their index shards share the hash tag `{<app>.<shard>}`, so every script
//! touches one Redis Cluster slot, while the indexes are spread over [`SHARDS`] keys (and
//! slots) per app (and per template). The openId, campaign id or template id comes after the
//! tag, as the key's last part, so none can move a key to another slot. The consent layout is
//! read as it is by `wxpush reach`: change it only together. This module must not talk to
//! Redis.

use wxpush_domain::{AppId, Namespace, OpenId};

/// Number of index shards per app. Fixed: changing it would orphan existing index entries.
/// 1024 keeps each shard small enough to stay in Redis's compact listpack encoding up to
/// about 130,000 reachable users per app, and spreads the index over many cluster slots.
pub const SHARDS: u16 = 1024;

/// Which index shard a user belongs to: FNV-1a of the openId, stable across versions.
pub fn shard_of(open_id: &OpenId) -> u16 {
    shard_of_text(open_id.as_str())
}

/// FNV-1a of `text`, modulo [`SHARDS`]: [`shard_of`] for any text (a campaign id).
pub fn shard_of_text(text: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(SHARDS)) as u16
}

/// Builds the keys of one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    ns: Namespace,
}

impl Keys {
    pub fn new(ns: Namespace) -> Self {
        Self { ns }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// One user's credential zset.
    pub fn credentials(&self, app: &AppId, open_id: &OpenId) -> String {
        self.credentials_in(app, shard_of(open_id), open_id.as_str())
    }

    /// The credential zset of `user` as index shard `shard` lists them (the text as the index
    /// holds it, not checked: for readers walking an index).
    pub fn credentials_in(&self, app: &AppId, shard: u16, user: &str) -> String {
        self.key("c", app, shard, Some(user))
    }

    /// `{ns}:<kind>:{<app>.<shard>}[:<rest>]` ([`wxpush_redis::tagged`]).
    fn key(&self, kind: &str, app: &AppId, shard: u16, rest: Option<&str>) -> String {
        wxpush_redis::tagged(&self.ns, kind, format_args!("{app}.{shard}"), rest)
    }

    /// One user's campaign marks (same slot as their credentials).
    pub fn marks(&self, app: &AppId, open_id: &OpenId) -> String {
        self.key("m", app, shard_of(open_id), Some(open_id.as_str()))
    }

    /// A campaign's outcome counters for the users of one shard (same slot as their marks).
    pub fn campaign_counters(&self, app: &AppId, shard: u16, campaign: &str) -> String {
        self.key("cs", app, shard, Some(campaign))
    }

    /// The index shard holding `open_id`.
    /// `{ns}:cr:{<app>.<shard>}:<campaign>`: the shard's users whose outcome for the campaign
    /// was `dead_lettered` (certainly not delivered): what `wxpush campaign retry` sends again.
    pub fn campaign_retryable(&self, app: &AppId, shard: u16, campaign: &str) -> String {
        self.key("cr", app, shard, Some(campaign))
    }

    pub fn index_of(&self, app: &AppId, open_id: &OpenId) -> String {
        self.index_shard(app, shard_of(open_id))
    }

    /// Index shard number `shard` of `app`.
    pub fn index_shard(&self, app: &AppId, shard: u16) -> String {
        self.key("u", app, shard, None)
    }

    /// One user's subscribe consents (same slot as their credentials).
    pub fn consents(&self, app: &AppId, open_id: &OpenId) -> String {
        self.key("s", app, shard_of(open_id), Some(open_id.as_str()))
    }

    /// The consent index shard of `template` holding `open_id`.
    pub fn consent_index_of(&self, app: &AppId, open_id: &OpenId, template: &str) -> String {
        self.consent_index(app, shard_of(open_id), template)
    }

    /// Consent index shard number `shard` of `template`: the shard's users holding a consent
    /// for it.
    pub fn consent_index(&self, app: &AppId, shard: u16, template: &str) -> String {
        self.key("t", app, shard, Some(template))
    }

    /// The mark of one WeChat push event applied for `open_id` (same slot as their consents):
    /// `event` is the event's own key (its time and type, and a template where it matters).
    pub fn event_mark(&self, app: &AppId, open_id: &OpenId, event: &str) -> String {
        self.key(
            "ev",
            app,
            shard_of(open_id),
            Some(&format!("{}:{event}", open_id.as_str())),
        )
    }

    /// A message push nonce seen for `app`, spread over the shards by the nonce.
    pub fn push_nonce(&self, app: &AppId, nonce: &str) -> String {
        self.key("pn", app, shard_of_text(nonce), Some(nonce))
    }

    /// The consent totals of shard `shard`: template → consents its users hold.
    pub fn consent_totals(&self, app: &AppId, shard: u16) -> String {
        self.key("tc", app, shard, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_key_and_index_share_one_hash_tag() {
        let keys = Keys::new(Namespace::new("wxpush").unwrap());
        let app = AppId::new("wx1234567890abcdef").unwrap();
        let user = OpenId::new("o{evil}:x").unwrap();
        let c = keys.credentials(&app, &user);
        let i = keys.index_of(&app, &user);
        let tag = |k: &str| {
            let open = k.find('{').unwrap();
            let close = open + k[open..].find('}').unwrap();
            k[open..=close].to_owned()
        };
        assert_eq!(tag(&c), tag(&i));
        assert!(c.ends_with(":o{evil}:x"));
        assert_eq!(c, keys.credentials_in(&app, shard_of(&user), "o{evil}:x"));
        assert!(shard_of(&user) < SHARDS);
    }

    #[test]
    fn consent_keys_share_the_users_hash_tag() {
        let keys = Keys::new(Namespace::new("wxpush").unwrap());
        let app = AppId::new("wx1234567890abcdef").unwrap();
        let user = OpenId::new("oLvT05Abc").unwrap();
        let shard = shard_of(&user);
        let tag = format!("{{wx1234567890abcdef.{shard}}}");
        assert_eq!(
            keys.consents(&app, &user),
            format!("wxpush:s:{tag}:oLvT05Abc")
        );
        assert_eq!(
            keys.consent_index_of(&app, &user, "TPL:{x}"),
            format!("wxpush:t:{tag}:TPL:{{x}}")
        );
        assert_eq!(keys.consent_totals(&app, shard), format!("wxpush:tc:{tag}"));
        assert_eq!(
            keys.consent_totals(&app, 7),
            "wxpush:tc:{wx1234567890abcdef.7}"
        );
        assert!(keys.credentials(&app, &user).contains(&tag));
    }

    #[test]
    fn shards_spread_users() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..5000 {
            seen.insert(shard_of(&OpenId::new(&format!("oUser{n}")).unwrap()));
        }
        assert!(seen.len() > 900, "only {} shards used", seen.len());
    }
}
