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
//! {ns}:sb:{<app>.<shard>}:<bucket>  hash  consent bucket (one of CONSENT_BUCKETS per shard):
//!                                          openId → the user's consent counts, written with
//!                                          the shard's template numbers (`consent.rs`)
//! {ns}:tn:{<app>.<shard>}           hash  template dictionary: templateId → number,
//!                                          " <number>" → templateId, " #" → last number
//! {ns}:th:{<app>.<shard>}           hash  consent holders: templateId → users of the shard's
//!                                          buckets holding ≥ 1 consent for it
//! {ns}:tc:{<app>.<shard>}           hash  consent totals: templateId → consents held by the
//!                                          shard's users
//! {ns}:s:{<app>.<shard>}:<openId>   hash  (before buckets) one user's consents, moved into a
//!                                          bucket by the user's next consent write
//! {ns}:t:{<app>.<shard>}:<templateId> set (before buckets) the not yet moved users holding
//!                                          ≥ 1 consent for that template
//! {ns}:ev:{<app>.<shard>}:<openId>:<event> string  a WeChat push event applied for the
//!                                          user (`events.rs`; lives an hour)
//! {ns}:pn:{<app>.<n>}:<nonce>       string  a message push nonce seen (`<n>`: the nonce's
//!                                          shard; lives 15 minutes)
//! {ns}:camp:{<app>.<n>}:<campaign>  hash  the campaign's record (its key and fields are
//!                                          `record.rs`'s; `<n>`: the campaign id's shard)
//! {ns}:dl:{<source>}                hash  dead letters of a source queue counted by reason code
//!                                          (and " since": the first, ms), for the dashboard
//! {ns}:dls:{<source>}               list  the last few of them (code, reason, when; JSON)
//! {ns}:ci:{<app>.<n>}               zset  campaign index: the ids of shard `<n>`'s records,
//!                                          score = when the record opened (ms); written by
//!                                          `record_open.lua`, read by the dashboard's list
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
    (fnv1a(text) % u32::from(SHARDS)) as u16
}

/// Consent buckets per index shard: a shard's consent holders are spread over this many
/// hashes, so each stays in Redis's compact listpack encoding (at most 512 fields by default)
/// up to about 4 million consent holders per app. Fixed: changing it would orphan consents.
pub const CONSENT_BUCKETS: u16 = 8;

/// Which consent bucket of its shard holds `open_id`: the FNV-1a bits above the shard's.
pub fn bucket_of(open_id: &OpenId) -> u16 {
    ((fnv1a(open_id.as_str()) / u32::from(SHARDS)) % u32::from(CONSENT_BUCKETS)) as u16
}

fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
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

    /// A campaign's sends by time for the users of one shard (same slot as their counters):
    /// `r:<unix s / 10>` → sends, for the dashboard's chart, apart from the counters so that
    /// reading a campaign's outcomes never reads them.
    pub fn campaign_rates(&self, app: &AppId, shard: u16, campaign: &str) -> String {
        self.key("cw", app, shard, Some(campaign))
    }

    /// `{ns}:ci:{<app>.<n>}`: the campaign index of shard `n` (the records whose id's
    /// [`shard_of_text`] is `n`, so the same slot as theirs): campaign id → when its record
    /// opened (ms). One `ZADD` per campaign, in `record_open.lua`; read by
    /// [`crate::Bank::campaign_list`].
    pub fn campaign_index(&self, app: &AppId, n: u16) -> String {
        self.key("ci", app, n, None)
    }

    /// `{ns}:dl:{<source>}`: the dead letters of `source` (`ingest`, `dispatch`, `send`,
    /// `messages`) counted by reason code by the roles that dead-letter them, and the time of
    /// the first counted (field `" since"`, ms). Kept 30 days after the last.
    pub fn dead_letter_counts(&self, source: &str) -> String {
        wxpush_redis::tagged(&self.ns, "dl", source, None)
    }

    /// `{ns}:dls:{<source>}`: the last [`crate::DEAD_LETTER_SAMPLE`] dead letters of
    /// `source` (JSON: code, reason, at), newest first; same slot as the counts.
    pub fn dead_letter_sample(&self, source: &str) -> String {
        wxpush_redis::tagged(&self.ns, "dls", source, None)
    }

    /// `{ns}:ob:{<app>.<shard>}`: the shard's receipt outbox (contract 8.3), a zset of receipts
    /// (JSON) by the time they were settled (ms), written by the script that settles the
    /// outcome, emptied once they are published.
    pub fn receipt_outbox(&self, app: &AppId, shard: u16) -> String {
        self.key("ob", app, shard, None)
    }

    /// `{ns}:ms:{<app>.<n>}:<day>`: the outcomes of the single messages whose receipts were
    /// published that day (Unix days), `n` the [`shard_of_text`] of their messageId: what
    /// `wxpush message status` reads (kept 9 days).
    pub fn message_status(&self, app: &AppId, n: u16, day: i64) -> String {
        self.key("ms", app, n, Some(&day.to_string()))
    }

    /// `{ns}:rm:{<app>.<shard>}:<day>`: the shard's msgids of that day (Unix days), each with
    /// its receipt's fields, so that WeChat's delivery event can be matched (kept 3 days).
    pub fn receipt_msgids(&self, app: &AppId, shard: u16, day: i64) -> String {
        self.key("rm", app, shard, Some(&day.to_string()))
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

    /// The consent bucket holding `open_id`'s consents (same slot as their credentials):
    /// `{ns}:sb:{<app>.<shard>}:<bucket>`, openId → the user's counts (see `consent.rs`).
    pub fn consent_bucket(&self, app: &AppId, open_id: &OpenId) -> String {
        self.consent_bucket_in(app, shard_of(open_id), bucket_of(open_id))
    }

    /// Consent bucket number `bucket` (< [`CONSENT_BUCKETS`]) of shard `shard`.
    pub fn consent_bucket_in(&self, app: &AppId, shard: u16, bucket: u16) -> String {
        self.key("sb", app, shard, Some(&bucket.to_string()))
    }

    /// The template dictionary of shard `shard`: templateId → the short number the shard's
    /// buckets write it as, `" <number>"` → templateId, and `" #"` → the last number given.
    pub fn consent_numbers(&self, app: &AppId, shard: u16) -> String {
        self.key("tn", app, shard, None)
    }

    /// The consent holders of shard `shard`: templateId → how many of its users (in the
    /// buckets) hold ≥ 1 consent for it.
    pub fn consent_holders(&self, app: &AppId, shard: u16) -> String {
        self.key("th", app, shard, None)
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

    /// The layout before consent buckets: one user's consent hash (template → count). Only
    /// read, and moved into the buckets on the user's first consent write (`consent.rs`).
    pub fn legacy_consents(&self, app: &AppId, open_id: &OpenId) -> String {
        self.key("s", app, shard_of(open_id), Some(open_id.as_str()))
    }

    /// The layout before consent buckets: index shard number `shard` of `template`, the
    /// shard's not yet moved users holding a consent for it.
    pub fn legacy_consent_index(&self, app: &AppId, shard: u16, template: &str) -> String {
        self.key("t", app, shard, Some(template))
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
        let bucket = bucket_of(&user);
        assert!(bucket < CONSENT_BUCKETS);
        assert_eq!(
            keys.consent_bucket(&app, &user),
            format!("wxpush:sb:{tag}:{bucket}")
        );
        assert_eq!(
            keys.consent_numbers(&app, shard),
            format!("wxpush:tn:{tag}")
        );
        assert_eq!(
            keys.consent_holders(&app, shard),
            format!("wxpush:th:{tag}")
        );
        assert_eq!(
            keys.legacy_consents(&app, &user),
            format!("wxpush:s:{tag}:oLvT05Abc")
        );
        assert_eq!(
            keys.legacy_consent_index(&app, shard, "TPL:{x}"),
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
    fn the_campaign_index_is_in_its_records_slot() {
        let ns = Namespace::new("wxpush").unwrap();
        let keys = Keys::new(ns.clone());
        let app = AppId::new("wx1234567890abcdef").unwrap();
        for id in ["c1", "spring-sale", "x{y}z"] {
            let record = crate::record::record_key(&ns, &app, id);
            let index = keys.campaign_index(&app, shard_of_text(id));
            let tag = |k: &str| {
                let open = k.find('{').unwrap();
                k[open..=open + k[open..].find('}').unwrap()].to_owned()
            };
            assert_eq!(tag(&record), tag(&index), "{record} {index}");
        }
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
