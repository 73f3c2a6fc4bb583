//! How one credential is written as a Redis member (or, for a consent, as the member a
//! campaign's marks hold).
//!
//! Member = one tag byte + payload:
//! - `h` + packed bytes: a formId of lowercase hex digits (real formIds are 32 of them),
//!   packed to half its length, which is what keeps the bank under 64 bytes of Redis memory
//!   per formId;
//! - `f` + text: any other formId;
//! - `p` + use digit (`1`..`3`) + text: one use of a prepayId. The three uses of a prepayId
//!   are three members with the same score (its expiry) in the user's credential zset, so a
//!   template claim spends formIds and prepayId uses as one pool, soonest to expire first
//!   (equal expiries in member order: `f`/`h` before `p1` before `p2` before `p3`);
//! - `s` + template id: one subscribe consent. Consents are counted in their own hash, never
//!   stored in the zset; this member is what a campaign's marks record while a consent is
//!   held for a message (`lua/campaign_claim_consent.lua`).
//!
//! Encoding is a pure function of the credential, so identical credentials always give
//! identical members and are stored once. This module must not talk to Redis.

use wxpush_domain::{Credential, CredentialKind, PREPAY_USES};

const TAG_HEX: u8 = b'h';
const TAG_TEXT: u8 = b'f';
const TAG_PREPAY: u8 = b'p';
const TAG_CONSENT: u8 = b's';

/// The first byte of a consent's member (see the module's documentation).
pub const CONSENT_TAG: u8 = TAG_CONSENT;

/// The member bytes for a credential. A prepayId use number outside `1..=3` cannot be read
/// back ([`decode`] refuses it); the bank refuses to store one.
pub fn encode(c: &Credential) -> Vec<u8> {
    match c.kind {
        CredentialKind::FormId => encode_form_id(&c.value),
        CredentialKind::PrepayId { use_no } => {
            let mut out = Vec::with_capacity(2 + c.value.len());
            out.push(TAG_PREPAY);
            out.push(b'0'.wrapping_add(use_no));
            out.extend_from_slice(c.value.as_bytes());
            out
        }
        CredentialKind::Consent => {
            let mut out = Vec::with_capacity(1 + c.value.len());
            out.push(TAG_CONSENT);
            out.extend_from_slice(c.value.as_bytes());
            out
        }
    }
}

/// True for a prepayId use number a member can carry (`1..=3`).
pub fn valid_use(use_no: u8) -> bool {
    (1..=PREPAY_USES).contains(&use_no)
}

fn encode_form_id(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let packable = !b.is_empty()
        && b.len().is_multiple_of(2)
        && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if packable {
        let mut out = Vec::with_capacity(1 + b.len() / 2);
        out.push(TAG_HEX);
        for pair in b.chunks_exact(2) {
            out.push((nibble(pair[0]) << 4) | nibble(pair[1]));
        }
        out
    } else {
        let mut out = Vec::with_capacity(1 + b.len());
        out.push(TAG_TEXT);
        out.extend_from_slice(b);
        out
    }
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// The credential a member stands for, or `None` for bytes this version does not know.
/// `expires_at` is the member's score (a consent's is ignored: it never expires).
pub fn decode(member: &[u8], expires_at: i64) -> Option<Credential> {
    let (&tag, payload) = member.split_first()?;
    if payload.is_empty() {
        return None; // no credential has an empty value
    }
    match tag {
        TAG_HEX => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut s = String::with_capacity(payload.len() * 2);
            for b in payload {
                s.push(HEX[usize::from(b >> 4)] as char);
                s.push(HEX[usize::from(b & 0xf)] as char);
            }
            Some(Credential::form_id(s, expires_at))
        }
        TAG_TEXT => Some(Credential::form_id(
            String::from_utf8(payload.to_vec()).ok()?,
            expires_at,
        )),
        TAG_PREPAY => {
            let (&digit, id) = payload.split_first()?;
            let use_no = digit.checked_sub(b'0').filter(|&n| valid_use(n))?;
            if id.is_empty() {
                return None;
            }
            let id = String::from_utf8(id.to_vec()).ok()?;
            Some(Credential::prepay_use(id, use_no, expires_at))
        }
        TAG_CONSENT => Some(Credential::consent(
            String::from_utf8(payload.to_vec()).ok()?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_form_ids_pack_to_half() {
        let c = Credential::form_id("f3c5e0a6b1f3c5e0a6b1f3c5e0a6b1ff", 5);
        let m = encode(&c);
        assert_eq!(m.len(), 17);
        assert_eq!(decode(&m, 5), Some(c));
    }

    #[test]
    fn other_form_ids_are_kept_as_text() {
        for v in [
            "F3C5",
            "abc",
            "1535626496786 x",
            "wx2017033010242291fcfe0db70013231072",
        ] {
            let c = Credential::form_id(v, 9);
            let m = encode(&c);
            assert_eq!(m[0], b'f', "{v}");
            assert_eq!(decode(&m, 9), Some(c));
        }
        assert_eq!(decode(b"", 1), None);
        assert_eq!(decode(b"z123", 1), None);
    }

    #[test]
    fn a_prepay_id_is_three_members_tagged_with_their_use() {
        let id = "wx2017033010242291fcfe0db70013231072";
        let members: Vec<Vec<u8>> = Credential::prepay_uses(id, 5).map(|c| encode(&c)).collect();
        for (n, m) in members.iter().enumerate() {
            assert_eq!(m[..2], [b'p', b'1' + n as u8]);
            assert_eq!(&m[2..], id.as_bytes());
            assert_eq!(
                decode(m, 5),
                Some(Credential::prepay_use(id, n as u8 + 1, 5))
            );
        }
        // Equal scores sort by member: formIds, then uses 1, 2, 3.
        let mut sorted = members.clone();
        sorted.push(encode(&Credential::form_id("ffff", 5)));
        sorted.push(encode(&Credential::form_id("zz", 5)));
        sorted.sort();
        assert_eq!(sorted[2..], members[..]);
        for bad in [&b"p0x"[..], b"p4x", b"p1", b"p", b"pax"] {
            assert_eq!(decode(bad, 1), None, "{bad:?}");
        }
    }

    #[test]
    fn a_consent_is_its_template_behind_tag_s() {
        let c = Credential::consent("TPL_ORDER");
        let m = encode(&c);
        assert_eq!(m, b"sTPL_ORDER");
        assert_eq!(m[0], CONSENT_TAG);
        // Whatever score a campaign's marks kept, a consent never expires.
        assert_eq!(decode(&m, 0), Some(c));
        assert_eq!(decode(b"s", 0), None);
    }

    proptest::proptest! {
        #[test]
        fn round_trips(v in "[ -~]{1,64}|[0-9a-f]{2,64}", use_no in 1u8..=3) {
            let c = Credential::form_id(v.clone(), 7);
            proptest::prop_assert_eq!(decode(&encode(&c), 7), Some(c));
            let p = Credential::prepay_use(v.clone(), use_no, 7);
            proptest::prop_assert_eq!(decode(&encode(&p), 7), Some(p));
            let s = Credential::consent(v);
            proptest::prop_assert_eq!(decode(&encode(&s), 7), Some(s));
        }

        #[test]
        fn kinds_never_share_a_member(v in "[ -~]{1,40}", w in "[ -~]{1,40}", use_no in 1u8..=3) {
            let f = encode(&Credential::form_id(v.clone(), 1));
            let p = encode(&Credential::prepay_use(w.clone(), use_no, 1));
            let s = encode(&Credential::consent(w));
            proptest::prop_assert!(f != p && f != s && p != s);
        }

        #[test]
        fn any_bytes_decode_or_are_refused(b in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            // Every member the bank can read stands for one credential, which it writes back
            // the same way (a text member of hex digits is read, though never written).
            if let Some(c) = decode(&b, 9) {
                proptest::prop_assert_eq!(decode(&encode(&c), 9), Some(c));
            }
        }
    }
}
