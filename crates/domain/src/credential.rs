//! Credentials: the permissions WeChat grants a mini program to message one user.
//!
//! This module owns the kinds and their lifetimes as WeChat defines them:
//! - a **formId** (one message within 7 days of the form submission);
//! - a **prepayId** (three messages within 7 days of the payment; its three uses share one
//!   expiry, and each use is a [`Credential`] of its own, [`CredentialKind::PrepayId`] with
//!   its use number, so the three can be spent one at a time);
//! - a **subscribe consent** (one message per consent, for one template, no expiry). An upload
//!   carries consents as [`Consent`]s (a template id and how many); one consent being spent
//!   (or stored) is a [`Credential`] of kind [`CredentialKind::Consent`] whose value is the
//!   template id.
//!
//! It also owns the rule for a template id a consent may be stored under
//! ([`check_template_id`]). It must not know how the bank stores any of them (that encoding
//! is `wxpush-bank`'s), and does no I/O.

use crate::campaign::MAX_TEMPLATE_ID_BYTES;
use crate::names::NameError;

/// How many messages one prepayId allows (within 7 days of the payment).
pub const PREPAY_USES: u8 = 3;

/// [`Credential::expires_at`] of a consent: it does not expire.
pub const NEVER_EXPIRES: i64 = i64::MAX;

/// What a credential is, which decides how many messages it allows and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// From a `<form report-submit>` submission: one message within 7 days.
    FormId,
    /// Use `use_no` (1..=[`PREPAY_USES`]) of a prepayId: each use allows one message, all
    /// three within 7 days of the payment (they share the prepayId's expiry). WeChat's
    /// template API takes the prepayId in its `form_id` field.
    PrepayId { use_no: u8 },
    /// One subscribe consent for the template named by [`Credential::value`]: one message
    /// through the subscribe API, never expiring ([`NEVER_EXPIRES`]).
    Consent,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::FormId => "formId",
            CredentialKind::PrepayId { .. } => "prepayId",
            CredentialKind::Consent => "consent",
        }
    }
}

/// One usable credential of one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub kind: CredentialKind,
    /// The value WeChat issued: the formId or prepayId (sent as `form_id`), or, for a
    /// consent, the template id it was given for.
    pub value: String,
    /// Unix time, in whole seconds, after which WeChat will refuse it ([`NEVER_EXPIRES`] for
    /// a consent).
    pub expires_at: i64,
}

impl Credential {
    pub fn form_id(value: impl Into<String>, expires_at: i64) -> Self {
        Self {
            kind: CredentialKind::FormId,
            value: value.into(),
            expires_at,
        }
    }

    /// Use `use_no` (1..=[`PREPAY_USES`]) of a prepayId.
    pub fn prepay_use(value: impl Into<String>, use_no: u8, expires_at: i64) -> Self {
        Self {
            kind: CredentialKind::PrepayId { use_no },
            value: value.into(),
            expires_at,
        }
    }

    /// The [`PREPAY_USES`] uses of one prepayId, sharing its expiry.
    pub fn prepay_uses(value: &str, expires_at: i64) -> impl Iterator<Item = Credential> + '_ {
        (1..=PREPAY_USES).map(move |n| Self::prepay_use(value, n, expires_at))
    }

    /// One subscribe consent for `template_id`.
    pub fn consent(template_id: impl Into<String>) -> Self {
        Self {
            kind: CredentialKind::Consent,
            value: template_id.into(),
            expires_at: NEVER_EXPIRES,
        }
    }

    pub fn is_consent(&self) -> bool {
        self.kind == CredentialKind::Consent
    }
}

/// Subscribe consents of one user for one template, as an upload grants them: `count`
/// messages through WeChat's subscribe API, at any time (they do not expire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Consent {
    /// A valid template id ([`check_template_id`]).
    pub template_id: String,
    /// At least 1.
    pub count: u32,
}

impl Consent {
    /// The consents one at a time, as credentials of kind [`CredentialKind::Consent`].
    pub fn credentials(&self) -> impl Iterator<Item = Credential> + '_ {
        (0..self.count).map(|_| Credential::consent(self.template_id.as_str()))
    }
}

/// A template id a consent may be stored under: printable ASCII without spaces, at most
/// [`MAX_TEMPLATE_ID_BYTES`] (WeChat's are 43 characters of letters, digits, `-` and `_`).
/// It becomes the last part of a Redis key and a hash field, so whitespace, control
/// characters and non-ASCII are refused, as for an openId.
pub fn check_template_id(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "templateId";
    if s.is_empty() {
        return Err(NameError::Empty { what: WHAT });
    }
    if s.len() > MAX_TEMPLATE_ID_BYTES {
        return Err(NameError::TooLong {
            what: WHAT,
            len: s.len(),
            max: MAX_TEMPLATE_ID_BYTES,
        });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(NameError::BadChar {
            what: WHAT,
            allowed: "printable ASCII without spaces",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepay_id_is_three_uses_sharing_its_expiry() {
        let uses: Vec<Credential> = Credential::prepay_uses("wx20170330", 99).collect();
        assert_eq!(uses.len(), usize::from(PREPAY_USES));
        for (i, c) in uses.iter().enumerate() {
            assert_eq!(
                c.kind,
                CredentialKind::PrepayId {
                    use_no: i as u8 + 1
                }
            );
            assert_eq!((c.value.as_str(), c.expires_at), ("wx20170330", 99));
            assert_eq!(c.kind.as_str(), "prepayId");
        }
    }

    #[test]
    fn a_consent_never_expires_and_counts_one_by_one() {
        let c = Consent {
            template_id: "TPL".into(),
            count: 2,
        };
        let creds: Vec<Credential> = c.credentials().collect();
        assert_eq!(creds, vec![Credential::consent("TPL"); 2]);
        assert!(creds[0].is_consent());
        assert_eq!(creds[0].expires_at, NEVER_EXPIRES);
        assert!(!Credential::form_id("f", 1).is_consent());
    }

    #[test]
    fn template_ids_are_printable_ascii_without_spaces() {
        for ok in [
            "TPL_ORDER_SHIPPED",
            "6fX8-abc_Z",
            "a:{b}*",
            &"x".repeat(128),
        ] {
            assert_eq!(check_template_id(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "a b", "tab\t", "nl\n", "é", "\u{0}", &"x".repeat(129)] {
            assert!(check_template_id(bad).is_err(), "{bad:?}");
        }
    }
}
