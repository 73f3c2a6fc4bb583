//! Keeping app secrets and access tokens out of every string this crate produces.
//!
//! This module owns turning a `reqwest::Error` into a printable reason with its URL (which holds
//! `secret=` or `access_token=`) removed, and scrubbing known secret values from any text.
//! It must not log anything itself.

use std::error::Error as _;

/// Replaces every occurrence of each non-empty secret in `text` with `***`.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(s) {
            out = out.replace(s, "***");
        }
    }
    out
}

/// A one-line description of a transport error: its message and its causes, without the URL,
/// scrubbed of the given secrets.
pub(crate) fn describe(err: reqwest::Error, secrets: &[&str]) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let piece = s.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = s.source();
    }
    scrub(&text, secrets)
}

/// Whether the request may have reached the server. A connect error (refused, DNS failure,
/// connect timeout, TLS handshake failure) means nothing was written; anything else (a timeout
/// or a reset while waiting for the answer) may have been acted on.
pub(crate) fn may_have_been_sent(err: &reqwest::Error) -> bool {
    !err.is_connect() && !err.is_builder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_each_secret() {
        assert_eq!(
            scrub("a=s3cr3t&b=tok&c=s3cr3t", &["s3cr3t", "tok", ""]),
            "a=***&b=***&c=***"
        );
        assert_eq!(scrub("nothing here", &["x1"]), "nothing here");
    }
}
