//! The first checks every inbound JSON message passes: size, UTF-8, JSON, an object.
//!
//! Uploads and campaigns both start here and map [`BodyError`] into their own reasons. This
//! module must not look at any field.

use serde_json::{Map, Value};

/// Why a message body is not a JSON object within the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    TooLarge { len: usize, max: usize },
    NotUtf8,
    NotJson(String),
    NotObject,
}

/// The body as a JSON object, if it is one of at most `max_bytes` bytes. serde_json stops at
/// 128 levels of nesting with an error, so deep input cannot overflow the stack.
pub(crate) fn json_object(body: &[u8], max_bytes: usize) -> Result<Map<String, Value>, BodyError> {
    if body.len() > max_bytes {
        return Err(BodyError::TooLarge {
            len: body.len(),
            max: max_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(BodyError::NotObject),
    }
}
