//! The one shape of every wxpush key: `<namespace>:<kind>:{<tag>}` or
//! `<namespace>:<kind>:{<tag>}:<rest>`.
//!
//! The hash tag comes right after the kind and before any part an outsider chose (an openId, a
//! campaign id, a template id), so no such part, even one holding `{` or `}`, can choose the
//! key's Redis Cluster slot: keys of one tag share one slot, whatever follows. Namespaces and
//! the tags' own parts (appIds, shard numbers, digests) hold no braces (`wxpush-domain` checks
//! the names). This module must not know which kinds exist: the bank's and the fleet's key
//! modules do.

use std::fmt::Display;

/// `<ns>:<kind>:{<tag>}`, then `:<rest>` when there is one.
pub fn tagged(ns: impl Display, kind: &str, tag: impl Display, rest: Option<&str>) -> String {
    match rest {
        Some(rest) => format!("{ns}:{kind}:{{{tag}}}:{rest}"),
        None => format!("{ns}:{kind}:{{{tag}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot_of;

    #[test]
    fn what_follows_the_tag_never_moves_the_key() {
        let a = tagged("ns", "c", "wx1.7", Some("o{evil}"));
        assert_eq!(a, "ns:c:{wx1.7}:o{evil}");
        assert_eq!(slot_of(a.as_bytes()), slot_of(b"wx1.7"));
        assert_eq!(tagged("ns", "u", "wx1.7", None), "ns:u:{wx1.7}");
    }
}
