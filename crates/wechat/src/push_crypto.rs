//! The cryptography of WeChat's message push (the mini program's "message push" server URL,
//! contract §8.4; WECHAT.md "Message push"): the request signatures and secure mode's
//! AES-256-CBC envelope, checked against WeChat's published test vector.
//!
//! - `signature = sha1(sort(token, timestamp, nonce))` on every request (and the `GET` server
//!   check); in secure mode `msg_signature = sha1(sort(token, timestamp, nonce, Encrypt))`.
//!   Signatures are compared in constant time ([`signatures_match`]).
//! - Secure mode: `Encrypt` is base64 of AES-256-CBC, key = base64-decode(EncodingAESKey + "="),
//!   IV = the key's first 16 bytes, PKCS#7 padding to **32**-byte blocks (not AES's 16), over
//!   16 random bytes + the message's length (4 bytes, big-endian) + the message + the appid.
//!   [`PushCipher::open`] checks the padding, the length and that the appid is the app's own.
//!
//! This module must not parse messages (XML or JSON) or decide what an event means; nor log
//! a token, a key or a plaintext.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use sha1::{Digest, Sha1};

type Decryptor = cbc::Decryptor<aes::Aes256>;
type Encryptor = cbc::Encryptor<aes::Aes256>;

/// WeChat pads to 32-byte blocks.
const PAD_BLOCK: usize = 32;

/// Standard base64 that accepts non-zero trailing bits: WeChat's EncodingAESKeys are 43
/// characters whose last one usually carries some (its own SDKs decode leniently).
const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a push could not be opened. Says nothing of the key or the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushCryptoError {
    #[error("the EncodingAESKey is not 43 characters of base64")]
    BadKey,
    #[error("Encrypt is not base64")]
    NotBase64,
    #[error("Encrypt is not a whole number of AES blocks")]
    NotBlocks,
    #[error("the decrypted envelope's padding or length is wrong")]
    BadEnvelope,
    #[error("the push is for another app")]
    OtherApp,
}

/// The hex SHA-1 of the parts sorted and joined (WeChat's request signature).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let digest = Sha1::digest(sorted.concat().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` (from the request) equals `expected`, compared in constant time (no early
/// exit on the first differing byte), case-insensitively for hex.
pub fn signatures_match(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    }) == 0
}

/// Secure mode's envelope for one app.
pub struct PushCipher {
    key: [u8; 32],
}

impl std::fmt::Debug for PushCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushCipher(..)")
    }
}

impl PushCipher {
    /// From the app's EncodingAESKey (43 characters of base64, as WeChat's console shows it).
    pub fn new(encoding_aes_key: &str) -> Result<Self, PushCryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(PushCryptoError::BadKey);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| PushCryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| PushCryptoError::BadKey)?;
        Ok(Self { key })
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }

    /// Opens `Encrypt` (base64) addressed to `appid`: the message inside.
    pub fn open(&self, encrypt: &str, appid: &str) -> Result<Vec<u8>, PushCryptoError> {
        let mut data = LENIENT
            .decode(encrypt.trim())
            .map_err(|_| PushCryptoError::NotBase64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(PushCryptoError::NotBlocks);
        }
        let plain = Decryptor::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| PushCryptoError::NotBlocks)?;
        let pad = usize::from(*plain.last().ok_or(PushCryptoError::BadEnvelope)?);
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(PushCryptoError::BadEnvelope);
        }
        let (body, padding) = plain.split_at(plain.len() - pad);
        if padding.iter().any(|&b| usize::from(b) != pad) || body.len() < 20 {
            return Err(PushCryptoError::BadEnvelope);
        }
        let len = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let rest = &body[20..];
        if len > rest.len() {
            return Err(PushCryptoError::BadEnvelope);
        }
        let (message, receiver) = rest.split_at(len);
        if !signatures_match_bytes(receiver, appid.as_bytes()) {
            return Err(PushCryptoError::OtherApp);
        }
        Ok(message.to_vec())
    }

    /// Seals `message` for `appid` as WeChat does (with the 16 `random` bytes given): the
    /// fake WeChat's side, and tests.
    pub fn seal(&self, message: &[u8], appid: &str, random: [u8; 16]) -> String {
        let mut plain = Vec::with_capacity(20 + message.len() + appid.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message);
        plain.extend_from_slice(appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let sealed = Encryptor::new(&self.key.into(), &self.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }
}

/// Byte equality without an early exit (the appid check).
fn signatures_match_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // WeChat's published sample (WXBizMsgCrypt): token, EncodingAESKey, appid, and a push.
    const TOKEN: &str = "QDG6eK";
    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const APPID: &str = "wx5823bf96d3bd56c7";
    const ENCRYPT: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";

    #[test]
    fn the_published_push_verifies_and_opens() {
        let sig = signature(&[TOKEN, "1409659813", "1372623149", ENCRYPT]);
        assert!(signatures_match(
            &sig,
            "477715d11cdb4164915debcba66cb864d751f3e6"
        ));
        let cipher = PushCipher::new(KEY).unwrap();
        let message = cipher.open(ENCRYPT, APPID).unwrap();
        let text = String::from_utf8(message).unwrap();
        assert!(
            text.starts_with("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]>"),
            "{text}"
        );
        assert_eq!(
            cipher.open(ENCRYPT, "wx0000000000000000"),
            Err(PushCryptoError::OtherApp)
        );
    }

    #[test]
    fn the_published_server_check_verifies_and_opens() {
        let echostr = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
        let sig = signature(&[TOKEN, "1409659589", "263014780", echostr]);
        assert!(signatures_match(
            &sig,
            "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
        ));
        let cipher = PushCipher::new(KEY).unwrap();
        assert_eq!(cipher.open(echostr, APPID).unwrap(), b"1616140317555161061");
    }

    #[test]
    fn sealed_pushes_open_and_tampering_is_refused() {
        let cipher = PushCipher::new(KEY).unwrap();
        for len in [0usize, 1, 11, 12, 44, 1000] {
            let message = vec![b'x'; len];
            let sealed = cipher.seal(&message, APPID, [7; 16]);
            assert_eq!(cipher.open(&sealed, APPID).unwrap(), message, "{len}");
        }
        let sealed = cipher.seal(b"{\"Event\":\"x\"}", APPID, [1; 16]);
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(cipher.open(&tampered, APPID).is_err());
        assert_eq!(
            cipher.open("not base64!", APPID),
            Err(PushCryptoError::NotBase64)
        );
        assert_eq!(cipher.open("AAAA", APPID), Err(PushCryptoError::NotBlocks));
        assert_eq!(
            PushCipher::new("short").unwrap_err(),
            PushCryptoError::BadKey
        );
        assert!(!signatures_match("abc", "abcd"));
        assert!(signatures_match("ABC123", "abc123"));
        assert!(!format!("{cipher:?}").contains(KEY));
    }
}
