//! The text of a reason a message was refused: what goes into a log line and into a dead
//! letter's `x-wxpush-reason` header.
//!
//! A reason names what is wrong and where; it never quotes the input at length, because the
//! input may be hostile (a 300 KB string where a number belongs makes a 300 KB parser error)
//! and a header that large breaks the broker connection that carries it. This module owns the
//! bound ([`MAX_REASON_BYTES`]) and the one function that keeps to it; it does no I/O.

use std::borrow::Cow;

/// Longest reason text kept, in bytes (a few hundred: enough for any reason wxpush writes).
pub const MAX_REASON_BYTES: usize = 256;

/// `text` cut to at most [`MAX_REASON_BYTES`] bytes on a character boundary, with `…` and
/// the length it had when cut. Text already short enough is returned as it is.
pub fn short_reason(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_REASON_BYTES {
        return Cow::Borrowed(text);
    }
    let suffix = format!("… ({} bytes in all)", text.len());
    let mut end = MAX_REASON_BYTES.saturating_sub(suffix.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{suffix}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary_and_say_so() {
        assert_eq!(short_reason("fine"), "fine");
        let long = format!(
            "invalid type: string \"{}\", expected u32",
            "é".repeat(150_000)
        );
        let cut = short_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.starts_with("invalid type: string \""), "{cut}");
        assert!(
            cut.ends_with(&format!("… ({} bytes in all)", long.len())),
            "{cut}"
        );
        let exact = "x".repeat(MAX_REASON_BYTES);
        assert_eq!(short_reason(&exact), exact);
    }
}
