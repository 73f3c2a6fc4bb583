//! The shapes of the values the fake hands out: formIds (32 lowercase hex), prepay_ids
//! (`wx` + `yyyyMMddHHmmss` + 20 hex = 36 characters), access tokens, and the clock.
//!
//! This module owns generation from a given RNG and the wall clock in ms. It must not keep state.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(rng: &mut fastrand::Rng, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..len).map(|_| HEX[rng.usize(..16)] as char).collect()
}

/// A formId like WeChat's: 32 lowercase hex characters.
pub fn form_id(rng: &mut fastrand::Rng) -> String {
    hex(rng, 32)
}

/// A prepay_id like WeChat Pay's: `wx2017033010242291fcfe0db70013231072` (36 characters,
/// the payment's Beijing time then 20 hex digits).
pub fn prepay_id(rng: &mut fastrand::Rng, now_ms: u64) -> String {
    let beijing_secs = now_ms / 1000 + 8 * 3600;
    let (y, mo, d) = civil_from_days((beijing_secs / 86_400) as i64);
    let s = beijing_secs % 86_400;
    format!(
        "wx{y:04}{mo:02}{d:02}{:02}{:02}{:02}{}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        hex(rng, 20)
    )
}

/// An access token: 64 characters of `[A-Za-z0-9_-]`, like WeChat's opaque ones (shorter).
pub fn access_token(rng: &mut fastrand::Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..64)
        .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
        .collect()
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let f = form_id(&mut rng);
        assert_eq!(f.len(), 32);
        assert!(f
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // 2017-03-30 10:24:22 Beijing = 02:24:22 UTC.
        let p = prepay_id(&mut rng, 1_490_840_662_000);
        assert_eq!(p.len(), 36);
        assert!(p.starts_with("wx20170330102422"), "{p}");
        assert_eq!(access_token(&mut rng).len(), 64);
        assert_ne!(form_id(&mut rng), f);
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
