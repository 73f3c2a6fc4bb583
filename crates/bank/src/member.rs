//! How one credential is written as a zset member.
//!
//! Member = one tag byte + payload. Real formIds are 32 lowercase hex digits; those are
//! packed to 16 bytes (tag `h`), which is what keeps the bank under 64 bytes of Redis
//! memory per formId. Any other formId is kept as its text (tag `f`). Packing is a pure
//! function of the formId, so identical formIds always give identical members and are
//! stored once. Kinds to come take their own tags (a prepay_id's three uses: `p1`..`p3`
//! followed by the id, sharing its expiry). This module must not talk to Redis.

use wxpush_domain::{Credential, CredentialKind};

const TAG_HEX: u8 = b'h';
const TAG_TEXT: u8 = b'f';

/// The member bytes for a credential.
pub fn encode(c: &Credential) -> Vec<u8> {
    match c.kind {
        CredentialKind::FormId => encode_form_id(&c.value),
    }
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
pub fn decode(member: &[u8], expires_at: i64) -> Option<Credential> {
    let (&tag, payload) = member.split_first()?;
    let value = match tag {
        TAG_HEX => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut s = String::with_capacity(payload.len() * 2);
            for b in payload {
                s.push(HEX[usize::from(b >> 4)] as char);
                s.push(HEX[usize::from(b & 0xf)] as char);
            }
            s
        }
        TAG_TEXT => String::from_utf8(payload.to_vec()).ok()?,
        _ => return None,
    };
    Some(Credential::form_id(value, expires_at))
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

    proptest::proptest! {
        #[test]
        fn round_trips(v in "[ -~]{1,64}|[0-9a-f]{2,64}") {
            let c = Credential::form_id(v, 7);
            proptest::prop_assert_eq!(decode(&encode(&c), 7), Some(c));
        }
    }
}
