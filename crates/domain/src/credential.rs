//! A credential: one permission WeChat grants a mini program to message one user.
//!
//! This module owns the kinds and their lifetimes as WeChat defines them. It must not know
//! how the bank stores them (that encoding is `wxpush-bank`'s).

/// What a credential is, which decides how many messages it allows and for how long.
///
/// Today the bank stores formIds. The kinds the contract's v1.1 adds fit the same shape:
/// a prepay_id becomes three uses sharing one expiry (three `Credential`s with `use_no`
/// 1..=3 of kind `PrepayId`), and a subscribe consent is a counter per template that never
/// expires, claimed through its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// From a `<form report-submit>` submission: one message within 7 days.
    FormId,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::FormId => "formId",
        }
    }
}

/// One usable credential of one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub kind: CredentialKind,
    /// The value WeChat issued (sent as `form_id`).
    pub value: String,
    /// Unix time, in whole seconds, after which WeChat will refuse it.
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
}
