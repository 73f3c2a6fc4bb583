//! Where an app's access token comes from (contract §8.6): [`TokenSource`], parsed from
//! `token_source` in the `WXPUSH_CONFIG` file or from `WXPUSH_TOKEN_SOURCE` for the single app.
//!
//! - `stable` (the default): WeChat's `POST /cgi-bin/stable_token`, whose token is the same for
//!   every caller, so the mini program's other servers fetching theirs never invalidate ours;
//! - `classic`: `GET /cgi-bin/token`, where every fetch (ours or anyone's for the same appid)
//!   invalidates the previous token five minutes later;
//! - an `https://` URL (or `http://` to a host on a private network): the install's own central
//!   token service, read instead of WeChat.
//!
//! This module owns the names and the URL rules. It must not fetch anything, and its `Display`
//! and errors never show a URL's password or query (a service URL may carry a key there).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an app's access token comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenSource {
    /// `POST /cgi-bin/stable_token` (`force_refresh: false`, and `true` only to replace a
    /// token WeChat rejected while it was still the current one).
    #[default]
    Stable,
    /// `GET /cgi-bin/token`.
    Classic,
    /// The install's own token service: wxpush GETs it and never asks WeChat for this app.
    Service(ServiceUrl),
}

/// The URL of a central token service: `https://`, or `http://` to a private-network host.
/// `Display` and `Debug` hide its password and query.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(url::Url);

impl ServiceUrl {
    /// The whole URL, for the one request that uses it. Never log it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The parts of the URL that may be secret (password, query), to scrub from any text.
    pub fn secret_parts(&self) -> Vec<&str> {
        [self.0.password(), self.0.query()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect()
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.0;
        write!(f, "{}://", u.scheme())?;
        if !u.username().is_empty() {
            write!(f, "{}:***@", u.username())?;
        } else if u.password().is_some() {
            f.write_str(":***@")?;
        }
        if let Some(host) = u.host_str() {
            f.write_str(host)?;
        }
        if let Some(port) = u.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(u.path())?;
        if u.query().is_some() {
            f.write_str("?***")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({self})")
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Stable => f.write_str("stable"),
            TokenSource::Classic => f.write_str("classic"),
            TokenSource::Service(url) => write!(f, "{url}"),
        }
    }
}

impl TokenSource {
    /// Parses `stable`, `classic` or a service URL. The error is the reason only (the caller
    /// names the key or variable); it never repeats a URL's password or query.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("stable") {
            return Ok(TokenSource::Stable);
        }
        if t.eq_ignore_ascii_case("classic") {
            return Ok(TokenSource::Classic);
        }
        let lower = t.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            // A URL of another scheme is not echoed: it may hold a password.
            return Err(if t.contains("://") {
                "a token service URL must be https:// (or http:// to a private network)".into()
            } else {
                format!(
                    "'{}' is not \"stable\", \"classic\" or an https:// URL of a token service",
                    first_chars(t, 40)
                )
            });
        }
        let url = url::Url::parse(t).map_err(|e| format!("not a usable URL ({e})"))?;
        let shown = ServiceUrl(url.clone());
        if url.host().is_none() {
            return Err(format!("{shown} has no host"));
        }
        if url.fragment().is_some() {
            return Err(format!("{shown} must not have a #fragment"));
        }
        if url.scheme() == "http" && !is_private_host(&url) {
            return Err(format!(
                "{shown}: http:// is only for a host on a private network (a private or \
                 loopback IP address, localhost, a name without dots, or one ending in \
                 .internal, .local, .lan or .svc.cluster.local); use https://"
            ));
        }
        Ok(TokenSource::Service(shown))
    }
}

/// Whether `url`'s host is on a private network as far as its name or address tells: a
/// loopback, private (RFC 1918, RFC 4193) or link-local address, `localhost`, a single-label
/// name (a Kubernetes service in the same namespace), or a name under a suffix that only
/// resolves inside a network (`.internal`, `.local`, `.lan`, `.svc.cluster.local`, `.svc`).
fn is_private_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => private_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => private_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost"
                || !name.contains('.')
                || [
                    ".localhost",
                    ".internal",
                    ".local",
                    ".lan",
                    ".svc",
                    ".svc.cluster.local",
                ]
                .iter()
                .any(|s| name.ends_with(s))
        }
        None => false,
    }
}

fn private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return private_v4(v4);
            }
            let first = v6.segments()[0];
            v6 == Ipv6Addr::LOCALHOST
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local()
}

fn first_chars(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_kinds_parse_and_stable_is_the_default() {
        assert_eq!(TokenSource::default(), TokenSource::Stable);
        assert_eq!(TokenSource::parse("stable"), Ok(TokenSource::Stable));
        assert_eq!(TokenSource::parse(" Classic "), Ok(TokenSource::Classic));
        let s = TokenSource::parse("https://tokens.example.com/wx/wx1234?key=k3y").unwrap();
        let TokenSource::Service(url) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(url.expose(), "https://tokens.example.com/wx/wx1234?key=k3y");
        assert_eq!(url.secret_parts(), ["key=k3y"]);
        assert_eq!(s.to_string(), "https://tokens.example.com/wx/wx1234?***");
    }

    #[test]
    fn http_is_accepted_only_for_private_hosts() {
        for ok in [
            "http://127.0.0.1:8080/token",
            "http://10.1.2.3/t",
            "http://172.16.0.9/t",
            "http://192.168.1.1/t",
            "http://[::1]:9000/t",
            "http://[fd00::1]/t",
            "http://localhost:3000/t",
            "http://token-service/t",
            "http://token-service.wx.svc.cluster.local:8080/t",
            "http://tokens.corp.internal/t",
        ] {
            assert!(
                matches!(TokenSource::parse(ok), Ok(TokenSource::Service(_))),
                "{ok}"
            );
        }
        for bad in [
            "http://tokens.example.com/t",
            "http://8.8.8.8/t",
            "http://[2001:db8::1]/t",
        ] {
            let e = TokenSource::parse(bad).unwrap_err();
            assert!(e.contains("private network"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_are_one_line_and_never_show_a_password_or_query() {
        for (text, expected) in [
            (
                "fast",
                "'fast' is not \"stable\", \"classic\" or an https:// URL",
            ),
            ("ftp://u:hunter2@x/y", "must be https://"),
            ("https://", "not a usable URL"),
            (
                "http://u:hunter2@tokens.example.com/t?key=s3cr3t",
                "http://u:***@tokens.example.com/t?***: http:// is only for",
            ),
            ("https://h.example/t#frag", "must not have a #fragment"),
        ] {
            let e = TokenSource::parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
            assert!(!e.contains("hunter2") && !e.contains("s3cr3t"), "{e}");
        }
        let s = TokenSource::parse("https://u:hunter2@h.example/t?key=s3cr3t").unwrap();
        for text in [s.to_string(), format!("{s:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
        }
    }
}
