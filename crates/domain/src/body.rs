//! The first checks every inbound JSON message passes: size, UTF-8, JSON, an object.
//!
//! Uploads and campaigns both start here and map [`BodyError`] into their own reasons. This
//! module must not look at any field.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Why a message body is not a JSON object within the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    TooLarge { len: usize, max: usize },
    NotUtf8,
    NotJson(String),
    NotObject,
}

/// Checks the size and the encoding: the body as text, if it is UTF-8 of at most `max_bytes`.
fn text(body: &[u8], max_bytes: usize) -> Result<&str, BodyError> {
    if body.len() > max_bytes {
        return Err(BodyError::TooLarge {
            len: body.len(),
            max: max_bytes,
        });
    }
    std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)
}

/// The body as a JSON object whose fields are left as their JSON text, unparsed: what a
/// field costs is then only what reading it costs, so a large field can be bounded (or
/// streamed) before it becomes a tree ten times its size. The whole body is checked to be
/// JSON all the same (nesting bounded as below). Of a key given twice, the last counts, as in
/// [`json_object`].
pub(crate) fn raw_object(
    body: &[u8],
    max_bytes: usize,
) -> Result<BTreeMap<String, &RawValue>, BodyError> {
    let text = text(body, max_bytes)?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    // Parts read without a tree are read without recursion, at any depth; the rule stays the
    // one every message has: deeper than serde_json's limit is not JSON we take.
    if nesting(value.get()) > MAX_NESTING {
        return Err(BodyError::NotJson(format!(
            "nested deeper than {MAX_NESTING} levels"
        )));
    }
    if !value.get().trim_start().starts_with('{') {
        return Err(BodyError::NotObject);
    }
    serde_json::from_str(value.get()).map_err(|e| BodyError::NotJson(e.to_string()))
}

/// serde_json's nesting limit, which [`json_object`] meets as a parse error.
const MAX_NESTING: usize = 128;

/// How deep arrays and objects nest in valid JSON `text` (strings skipped).
fn nesting(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The body as a JSON object, if it is one of at most `max_bytes` bytes. serde_json stops at
/// 128 levels of nesting with an error, so deep input cannot overflow the stack.
pub(crate) fn json_object(body: &[u8], max_bytes: usize) -> Result<Map<String, Value>, BodyError> {
    let text = text(body, max_bytes)?;
    let value: Value = serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(BodyError::NotObject),
    }
}
