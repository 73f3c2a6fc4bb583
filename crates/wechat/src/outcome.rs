//! The one table that says what a send's result means: every WeChat errcode and every transport
//! failure maps to exactly one [`Outcome`] class here, and nowhere else.
//!
//! This module must not act on an outcome (no retry, no refresh, no credential removal): the
//! roles do that. It must not hold or print a token or secret.

use std::fmt;

/// What became of one send call, classified for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// errcode 0. `msgid` is given by the subscribe API.
    Sent { msgid: Option<i64> },
    /// Not delivered, worth trying again: WeChat's own `-1` (busy: its application answered,
    /// and it answers `-1` only for a send it did not carry out), a connection refused or not
    /// made in time, an HTTP 408 or 429 (the request was refused before it was processed).
    /// `code` is WeChat's errcode when it gave one.
    Transient { code: Option<i64>, reason: String },
    /// **Maybe delivered**: the request may have reached WeChat's application and been acted on,
    /// and no answer of WeChat's says what became of it: a timeout or a broken connection
    /// after the request was written, an HTTP 5xx (from WeChat's front end or a gateway in front
    /// of it: a 502/504 after the message went out is the common case of a lost reply), an
    /// unreadable or oversized `200` answer. Resending is safe only with a single-use
    /// credential WeChat refuses the second time (a formId: `41029`).
    Unknown { reason: String },
    /// 45011: the per-minute quota; wait for the next minute.
    MinuteQuota,
    /// 40001, 40014, 42001: the access token is invalid, illegal or expired.
    BadToken { code: i64 },
    /// 41028 (formId / prepay_id invalid, expired or someone else's), 41029 (already used up).
    BadCredential { code: i64 },
    /// 45009: the app's send quota is exhausted; stop until it resets.
    QuotaExhausted,
    /// 43101: the user gave no consent for this template, or none is left.
    NoConsent,
    /// 40003 (bad openid), 40037 (bad template), 41030 (bad page), 47003 (bad data value), 48001
    /// (API not authorised) and any errcode this table does not know: record, do not retry.
    /// Also an HTTP 3xx or 4xx answer (`code` is minus the status): something in front of
    /// WeChat's application answered (a wrong base URL, a captive portal, a proxy's refusal);
    /// the send did not reach WeChat's application, and sending again to the same place cannot
    /// help. Redirects are never followed.
    Permanent { code: i64, errmsg: String },
}

impl Outcome {
    /// The WeChat errcode behind this outcome, for counting failures by code (`Some(0)` for a
    /// success, `None` for a transport failure).
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Outcome::Sent { .. } => Some(0),
            Outcome::Transient { code, .. } => *code,
            Outcome::Unknown { .. } => None,
            Outcome::MinuteQuota => Some(45011),
            Outcome::BadToken { code } | Outcome::BadCredential { code } => Some(*code),
            Outcome::QuotaExhausted => Some(45009),
            Outcome::NoConsent => Some(43101),
            Outcome::Permanent { code, .. } => Some(*code),
        }
    }

    /// `true` for [`Outcome::Sent`].
    pub fn is_sent(&self) -> bool {
        matches!(self, Outcome::Sent { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Sent { .. } => f.write_str("sent"),
            Outcome::Transient { code, reason } => {
                write!(f, "transient failure")?;
                if let Some(c) = code {
                    write!(f, " (errcode {c})")?;
                }
                write!(f, ": {reason}")
            }
            Outcome::Unknown { reason } => write!(f, "outcome unknown: {reason}"),
            Outcome::MinuteQuota => f.write_str("minute quota reached (45011)"),
            Outcome::BadToken { code } => write!(f, "access token rejected ({code})"),
            Outcome::BadCredential { code } => write!(f, "formId/prepay_id rejected ({code})"),
            Outcome::QuotaExhausted => f.write_str("send quota exhausted (45009)"),
            Outcome::NoConsent => f.write_str("no subscribe consent left (43101)"),
            Outcome::Permanent { code, errmsg } => write!(f, "permanent error {code}: {errmsg}"),
        }
    }
}

/// The table: WeChat's answer `{"errcode", "errmsg"[, "msgid"]}` to its class.
pub fn classify_errcode(errcode: i64, errmsg: &str, msgid: Option<i64>) -> Outcome {
    match errcode {
        0 => Outcome::Sent { msgid },
        -1 => Outcome::Transient {
            code: Some(-1),
            reason: format!("WeChat busy: {errmsg}"),
        },
        45011 => Outcome::MinuteQuota,
        40001 | 40014 | 42001 => Outcome::BadToken { code: errcode },
        41028 | 41029 => Outcome::BadCredential { code: errcode },
        45009 => Outcome::QuotaExhausted,
        43101 => Outcome::NoConsent,
        // 40003, 40037, 41030, 47003, 48001 and every code not listed above.
        _ => Outcome::Permanent {
            code: errcode,
            errmsg: errmsg.to_owned(),
        },
    }
}

/// Transport cases of the table: an HTTP status that is not 200.
pub(crate) fn classify_http_status(status: u16) -> Outcome {
    if status >= 500 {
        // Not WeChat's application's answer: a front end or gateway may answer 5xx after the
        // message went out (a 504 when the reply was lost). Outcome unknown.
        Outcome::Unknown {
            reason: format!("HTTP {status}"),
        }
    } else if status == 408 || status == 429 {
        // Refused before it was processed (too slow to arrive, or too many): not delivered.
        Outcome::Transient {
            code: None,
            reason: format!("HTTP {status}"),
        }
    } else if (300..400).contains(&status) {
        // Not WeChat's application (it never redirects): the same as a 4xx from its front end.
        Outcome::Permanent {
            code: -(status as i64),
            errmsg: format!("HTTP {status}: a redirect, not followed"),
        }
    } else {
        // 4xx from WeChat's front end (e.g. 404 for a wrong base URL): refused, not processed;
        // retrying cannot help.
        Outcome::Permanent {
            code: -(status as i64),
            errmsg: format!("HTTP {status}"),
        }
    }
}

/// Transport cases of the table: a `200` answer longer than `limit` bytes, not read. Like an
/// unreadable answer, the request reached WeChat: outcome unknown.
pub(crate) fn classify_oversized(limit: usize) -> Outcome {
    Outcome::Unknown {
        reason: format!("answer over {} KiB, not read", limit / 1024),
    }
}

/// Transport cases of the table: the request failed before it was written (`sent == false`:
/// not delivered) or after (`sent == true`: outcome unknown).
pub(crate) fn classify_transport(reason: String, sent: bool) -> Outcome {
    if sent {
        Outcome::Unknown { reason }
    } else {
        Outcome::Transient { code: None, reason }
    }
}

/// Transport cases of the table: a 200 answer that is not WeChat's JSON.
pub(crate) fn classify_unreadable(reason: String) -> Outcome {
    Outcome::Unknown { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_classifies_every_documented_code() {
        assert_eq!(
            classify_errcode(0, "ok", Some(7)),
            Outcome::Sent { msgid: Some(7) }
        );
        assert!(matches!(
            classify_errcode(-1, "system error", None),
            Outcome::Transient { code: Some(-1), .. }
        ));
        assert_eq!(classify_errcode(45011, "", None), Outcome::MinuteQuota);
        for c in [40001, 40014, 42001] {
            assert_eq!(classify_errcode(c, "", None), Outcome::BadToken { code: c });
        }
        for c in [41028, 41029] {
            assert_eq!(
                classify_errcode(c, "", None),
                Outcome::BadCredential { code: c }
            );
        }
        assert_eq!(classify_errcode(45009, "", None), Outcome::QuotaExhausted);
        assert_eq!(classify_errcode(43101, "", None), Outcome::NoConsent);
        for c in [40003, 40037, 41030, 47003, 48001, 12345, 41001] {
            assert_eq!(
                classify_errcode(c, "m", None),
                Outcome::Permanent {
                    code: c,
                    errmsg: "m".into()
                }
            );
        }
    }

    #[test]
    fn transport_cases() {
        // A reply that did not come from WeChat's application may follow a delivery.
        for status in [500, 502, 503, 504] {
            assert!(
                matches!(classify_http_status(status), Outcome::Unknown { .. }),
                "{status}"
            );
        }
        for status in [408, 429] {
            assert!(
                matches!(
                    classify_http_status(status),
                    Outcome::Transient { code: None, .. }
                ),
                "{status}"
            );
        }
        assert!(matches!(
            classify_http_status(404),
            Outcome::Permanent { code: -404, .. }
        ));
        assert!(matches!(
            classify_http_status(302),
            Outcome::Permanent { code: -302, .. }
        ));
        assert!(matches!(classify_oversized(65536), Outcome::Unknown { .. }));
        assert!(matches!(
            classify_transport("x".into(), true),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(
            classify_transport("x".into(), false),
            Outcome::Transient { .. }
        ));
        assert!(matches!(
            classify_unreadable("x".into()),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn errcode_round_trips_through_the_classes() {
        for c in [
            0, -1, 45011, 40001, 40014, 42001, 41028, 41029, 45009, 43101, 40003, 99999,
        ] {
            assert_eq!(classify_errcode(c, "", None).errcode(), Some(c));
        }
    }
}
