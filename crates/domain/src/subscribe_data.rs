//! WeChat's limits on subscribe-message data values, by value type: the one table wxpush
//! checks a subscribe campaign's `data` against ([`validate_subscribe_data`], called by
//! [`crate::campaign::parse_campaign`]), so that a campaign WeChat would refuse is refused once,
//! with its reason, instead of once per recipient with `47003`.
//!
//! This module owns the table ([`VALUE_TYPES`]), the key → type rule ([`key_type`]) and the
//! checks. It must do no I/O and never panic on any input, and it must not guess what only
//! WeChat knows about a template: which fields it has, or an `enum` field's allowed values.
//!
//! # Source
//!
//! WeChat's official documentation of `subscribeMessage.send` (mini program server API
//! "发送订阅消息", section "订阅消息参数值内容限制说明"; it moved from
//! `developers.weixin.qq.com/miniprogram/dev/api-backend/open-api/subscribe-message/subscribeMessage.send.html`
//! to `.../OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html`), as
//! summarised in /work/shared/WECHAT.md and quoted by WxJava (`WxMaSubscribeMessage`) and
//! blog copies of the table. The rules as WeChat words them, and as read here:
//!
//! | type | WeChat's rule | read here as |
//! |---|---|---|
//! | `thing` | 20个以内字符, 汉字、数字、字母或符号 | ≤ 20 characters, any |
//! | `number` | 32位以内数字, 只能数字, 可带小数 | ≤ 32 ASCII digits, at most one `.` between digits; no sign |
//! | `letter` | 32位以内字母 | ≤ 32 ASCII letters |
//! | `symbol` | 5位以内符号 | ≤ 5 symbols |
//! | `character_string` | 32位以内数字、字母或符号 | ≤ 32 ASCII letters, digits or symbols |
//! | `time` | 24小时制时间 (支持+年月日), 时间段用 `~` 连接 | `H:MM[:SS]`, optionally after a date; two joined by `~` |
//! | `date` | 年月日 (支持+24小时制时间), 时间段用 `~` 连接 | a date, optionally with `H:MM[:SS]`; two joined by `~` |
//! | `amount` | 1个币种符号+10位以内纯数字, 可带小数, 结尾可带"元" | optional currency symbol, ≤ 10 digits with at most one `.`, optional `元` |
//! | `phone_number` | 17位以内, 数字、符号 | ≤ 17 ASCII digits or symbols |
//! | `car_number` | 8位以内, 第一位与最后一位可为汉字, 其余为字母或数字 | ≤ 8; ASCII letters/digits, the first and last may be Chinese |
//! | `name` | 10个以内纯汉字或20个以内纯字母或符号; 中文和字母混合按中文名算 | with a Chinese character: ≤ 10 Chinese, ASCII letters or symbols; without: ≤ 20 ASCII letters or symbols |
//! | `phrase` | 5个以内汉字 | ≤ 5 Chinese characters |
//! | `enum` | 只能上传枚举值范围内的字段值 | not empty (the template's values are not known here) |
//!
//! Definitions: a *character* is a Unicode scalar value (`"配送中"` is 3, not 9 bytes); a
//! *Chinese character* is a CJK unified or compatibility ideograph; a *symbol* is any
//! character that is not a letter, a digit, a Chinese character or a control character
//! (space and `·` included). A key names its type by the part before its trailing digits
//! (`thing1`, `character_string2`, `amount10`). An empty value is refused for every type
//! (WeChat answers `47003 … value is empty`).
//!
//! Decisions where the sources are silent, each erring towards letting WeChat decide:
//! - `amount`'s currency symbol is optional (the table says "1个", but community payloads
//!   such as `"6000.00"` pass): `¥ ￥ $ € £ ₩ ₹ ₽ ₺ ₫ ₱ ฿ ₪ ₦ ¢`, one of them, first;
//!   digits before and after the point count together towards the 10.
//! - `number` has no sign: the table says digits only (WxJava keeps a `-`; unverified).
//! - Date forms: `YYYY年M月D日`, `YYYY-M-D`, `YYYY/M/D` (month and day one or two digits);
//!   ranges only with the ASCII `~` and at most one of it; in a `date` range the part after
//!   `~` may be a time alone.
//!
//! A key whose type is none of these (`keyword1`, `thing1.DATA`, `a`) is refused: a subscribe
//! template's fields are all typed, so such a key is a mistake that WeChat answers with
//! `47003` for every recipient (the template's real field is then missing). A type WeChat adds
//! later is refused until it is added to [`VALUE_TYPES`], with a reason that says so.
//!
//! Not verified, so not checked: whether WeChat counts an emoji (or other characters outside
//! the Basic Multilingual Plane) as one character or two; whether it refuses control
//! characters in `thing`; `phrase` values WeChat refuses although they are five Chinese
//! characters or fewer (community reports suggest a vocabulary check); date and time forms
//! beyond those above.

use std::fmt;

use serde_json::{Map, Value};

/// One WeChat subscribe-message value type and its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueType {
    /// The key prefix: `thing`, `number`, ...
    pub name: &'static str,
    /// The rule in words, as checked (docs and error messages).
    pub rule: &'static str,
    check: Check,
}

/// How a type's values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// At most `max` characters, each one of `chars`.
    Chars { max: usize, chars: Chars },
    /// Digits with at most one decimal point; at most `max_digits` digits.
    Decimal { max_digits: usize },
    /// An optional currency symbol, a decimal of at most `max_digits` digits, optional `元`.
    Amount { max_digits: usize },
    /// At most `max` characters: ASCII letters or digits; the first and last may be Chinese.
    CarNumber { max: usize },
    /// With a Chinese character: at most `chinese_max` characters that are Chinese, ASCII
    /// letters or symbols; without: at most `latin_max` ASCII letters or symbols.
    Name {
        chinese_max: usize,
        latin_max: usize,
    },
    /// A time (`date_required: false`) or a date (`true`), or a range of two.
    Moment { date_required: bool },
    /// Any non-empty value.
    Enum,
}

/// The characters a [`Check::Chars`] type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chars {
    Any,
    AsciiLetters,
    Symbols,
    AsciiLettersDigitsSymbols,
    AsciiDigitsSymbols,
    Chinese,
}

impl Chars {
    fn allows(self, c: char) -> bool {
        match self {
            Chars::Any => true,
            Chars::AsciiLetters => c.is_ascii_alphabetic(),
            Chars::Symbols => is_symbol(c),
            Chars::AsciiLettersDigitsSymbols => c.is_ascii_alphanumeric() || is_symbol(c),
            Chars::AsciiDigitsSymbols => c.is_ascii_digit() || is_symbol(c),
            Chars::Chinese => is_chinese(c),
        }
    }
}

/// WeChat's subscribe-message value types: the one table (see the module documentation for
/// the source and the reading of each rule).
pub const VALUE_TYPES: &[ValueType] = &[
    ValueType {
        name: "thing",
        rule: "at most 20 characters of any kind",
        check: Check::Chars {
            max: 20,
            chars: Chars::Any,
        },
    },
    ValueType {
        name: "number",
        rule: "at most 32 digits, with at most one decimal point",
        check: Check::Decimal { max_digits: 32 },
    },
    ValueType {
        name: "letter",
        rule: "at most 32 letters (A-Z, a-z)",
        check: Check::Chars {
            max: 32,
            chars: Chars::AsciiLetters,
        },
    },
    ValueType {
        name: "symbol",
        rule: "at most 5 symbols",
        check: Check::Chars {
            max: 5,
            chars: Chars::Symbols,
        },
    },
    ValueType {
        name: "character_string",
        rule: "at most 32 letters (A-Z, a-z), digits or symbols",
        check: Check::Chars {
            max: 32,
            chars: Chars::AsciiLettersDigitsSymbols,
        },
    },
    ValueType {
        name: "time",
        rule: "24-hour H:MM or H:MM:SS, optionally after a date; a range joins two with ~",
        check: Check::Moment {
            date_required: false,
        },
    },
    ValueType {
        name: "date",
        rule: "YYYY年M月D日, YYYY-M-D or YYYY/M/D, optionally with H:MM[:SS]; a range joins two with ~",
        check: Check::Moment {
            date_required: true,
        },
    },
    ValueType {
        name: "amount",
        rule: "an optional currency symbol, at most 10 digits with at most one decimal point, optionally 元",
        check: Check::Amount { max_digits: 10 },
    },
    ValueType {
        name: "phone_number",
        rule: "at most 17 digits or symbols",
        check: Check::Chars {
            max: 17,
            chars: Chars::AsciiDigitsSymbols,
        },
    },
    ValueType {
        name: "car_number",
        rule: "at most 8 letters (A-Z, a-z) or digits; the first and last may be Chinese",
        check: Check::CarNumber { max: 8 },
    },
    ValueType {
        name: "name",
        rule: "at most 10 characters if any is Chinese (Chinese, letters, symbols), else at most 20 letters or symbols",
        check: Check::Name {
            chinese_max: 10,
            latin_max: 20,
        },
    },
    ValueType {
        name: "phrase",
        rule: "at most 5 Chinese characters",
        check: Check::Chars {
            max: 5,
            chars: Chars::Chinese,
        },
    },
    ValueType {
        name: "enum",
        rule: "one of the template's values (only non-emptiness is checked here)",
        check: Check::Enum,
    },
];

/// The type a data key names: the key without its trailing ASCII digits (`thing12` →
/// `thing`, `character_string2` → `character_string`).
pub fn key_type(key: &str) -> &str {
    key.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// The [`ValueType`] called `name`, if WeChat has one.
pub fn value_type(name: &str) -> Option<&'static ValueType> {
    VALUE_TYPES.iter().find(|t| t.name == name)
}

/// A subscribe data field WeChat would refuse, and why.
///
/// Displayed as the field and its problem, e.g. `thing1 is 22 characters, over the limit of
/// 20 for thing`. It quotes at most one character of the value (escaped), so it is short and
/// safe in a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct DataError {
    /// The data key, e.g. `thing1`.
    pub field: String,
    pub problem: Problem,
}

/// What is wrong with one subscribe data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The key names no WeChat value type.
    UnknownType { kind: String },
    /// The field is not `{"value": ...}` with a string or a number.
    NotAValue,
    /// The value is empty.
    Empty { kind: &'static str },
    /// Longer than the type allows. `unit` is `characters` or `digits`; `limit` names what the
    /// limit applies to (the type, or a variant of it such as `name with Chinese characters`).
    TooLong {
        len: usize,
        max: usize,
        unit: &'static str,
        limit: &'static str,
    },
    /// A character the type does not allow, at a 1-based character position.
    BadChar {
        ch: char,
        at: usize,
        kind: &'static str,
        rule: &'static str,
    },
    /// The characters are allowed but their arrangement is not the type's format.
    Format {
        kind: &'static str,
        rule: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownType { kind } => write!(
                f,
                "has type {:?}, which is not a WeChat subscribe type (WeChat would answer 47003)",
                kind
            ),
            Problem::NotAValue => f.write_str("is not {\"value\": ...} with a string or number"),
            Problem::Empty { kind } => write!(f, "is empty, which WeChat refuses for {kind}"),
            Problem::TooLong {
                len,
                max,
                unit,
                limit,
            } => write!(f, "is {len} {unit}, over the limit of {max} for {limit}"),
            Problem::BadChar { ch, at, kind, rule } => write!(
                f,
                "has {ch:?} at character {at}, not allowed in {kind} ({rule})"
            ),
            Problem::Format { kind, rule } => write!(f, "is not a valid {kind} ({rule})"),
        }
    }
}

/// Checks every field of a subscribe message's `data` (field → `{"value": ...}`, as
/// [`crate::CampaignKind::Subscribe`] keeps it) against [`VALUE_TYPES`]; the first field that
/// breaks its type's rule, in the map's order, is the error. A number value is checked as its
/// JSON text (`3` as `"3"`); other members of a field's object are not looked at.
pub fn validate_subscribe_data(data: &Map<String, Value>) -> Result<(), DataError> {
    for (field, item) in data {
        check_field(field, item).map_err(|problem| DataError {
            field: field.clone(),
            problem,
        })?;
    }
    Ok(())
}

fn check_field(field: &str, item: &Value) -> Result<(), Problem> {
    let kind = key_type(field);
    let Some(t) = value_type(kind) else {
        return Err(Problem::UnknownType {
            kind: kind.chars().take(64).collect(),
        });
    };
    let text = match item.get("value") {
        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
        Some(Value::Number(n)) => std::borrow::Cow::Owned(n.to_string()),
        _ => return Err(Problem::NotAValue),
    };
    check_value(t, &text)
}

/// Checks one value against its type's rule.
pub fn check_value(t: &ValueType, value: &str) -> Result<(), Problem> {
    if value.is_empty() {
        return Err(Problem::Empty { kind: t.name });
    }
    let bad_format = || Problem::Format {
        kind: t.name,
        rule: t.rule,
    };
    let bad_char = |at: usize, ch: char| Problem::BadChar {
        ch,
        at: at + 1,
        kind: t.name,
        rule: t.rule,
    };
    let too_long =
        |len: usize, max: usize, unit: &'static str, limit: &'static str| Problem::TooLong {
            len,
            max,
            unit,
            limit,
        };
    let len = value.chars().count();
    match t.check {
        Check::Chars { max, chars } => {
            if let Some((at, ch)) = value.chars().enumerate().find(|&(_, c)| !chars.allows(c)) {
                return Err(bad_char(at, ch));
            }
            if len > max {
                return Err(too_long(len, max, "characters", t.name));
            }
        }
        Check::Decimal { max_digits } => {
            let allowed = |c: char| c.is_ascii_digit() || c == '.';
            if let Some((at, ch)) = value.chars().enumerate().find(|&(_, c)| !allowed(c)) {
                return Err(bad_char(at, ch));
            }
            let digits = decimal_digits(value).ok_or_else(bad_format)?;
            if digits > max_digits {
                return Err(too_long(digits, max_digits, "digits", t.name));
            }
        }
        Check::Amount { max_digits } => {
            let v = value.strip_suffix('元').unwrap_or(value);
            let v = v.strip_prefix(CURRENCY_SYMBOLS).unwrap_or(v);
            let digits = decimal_digits(v).ok_or_else(bad_format)?;
            if digits > max_digits {
                return Err(too_long(digits, max_digits, "digits", t.name));
            }
        }
        Check::CarNumber { max } => {
            let last = len - 1;
            let allowed = |at: usize, c: char| {
                c.is_ascii_alphanumeric() || ((at == 0 || at == last) && is_chinese(c))
            };
            if let Some((at, ch)) = value.chars().enumerate().find(|&(at, c)| !allowed(at, c)) {
                return Err(bad_char(at, ch));
            }
            if len > max {
                return Err(too_long(len, max, "characters", t.name));
            }
        }
        Check::Name {
            chinese_max,
            latin_max,
        } => {
            let chinese = value.chars().any(is_chinese);
            let allowed = |c: char| c.is_ascii_alphabetic() || is_symbol(c) || is_chinese(c);
            if let Some((at, ch)) = value.chars().enumerate().find(|&(_, c)| !allowed(c)) {
                return Err(bad_char(at, ch));
            }
            if chinese && len > chinese_max {
                return Err(too_long(
                    len,
                    chinese_max,
                    "characters",
                    "name with Chinese characters",
                ));
            }
            if !chinese && len > latin_max {
                return Err(too_long(
                    len,
                    latin_max,
                    "characters",
                    "name without Chinese characters",
                ));
            }
        }
        Check::Moment { date_required } => {
            if !is_moment_range(value, date_required) {
                return Err(bad_format());
            }
        }
        Check::Enum => {}
    }
    Ok(())
}

/// The currency symbols an `amount` may start with.
const CURRENCY_SYMBOLS: &[char] = &[
    '¥', '￥', '$', '€', '£', '₩', '₹', '₽', '₺', '₫', '₱', '฿', '₪', '₦', '¢',
];

/// A CJK unified ideograph (basic, extensions A to H) or a compatibility ideograph.
pub fn is_chinese(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2EBEF}'
        | '\u{2F800}'..='\u{2FA1F}'
        | '\u{30000}'..='\u{323AF}')
}

/// Not a letter, digit, Chinese character or control character (so punctuation, spaces,
/// currency and other signs).
pub fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_control() && !is_chinese(c)
}

/// The number of digits of `D+` or `D+.D+` (ASCII digits), or `None` for another form.
fn decimal_digits(s: &str) -> Option<usize> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (digits(int) && frac.is_none_or(digits)).then(|| int.len() + frac.map_or(0, str::len))
}

/// Leading ASCII digits, `min..=max` of them, as a number; and what follows.
fn leading_number(s: &str, min: usize, max: usize) -> Option<(u32, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    if !(min..=max).contains(&n) {
        return None;
    }
    // `n` ASCII bytes, so a char boundary; at most 4 digits, so it fits.
    let value = s[..n].parse().ok()?;
    Some((value, &s[n..]))
}

/// `YYYY年M月D日`, `YYYY-M-D` or `YYYY/M/D` at the start of `s`; returns what follows.
fn strip_date(s: &str) -> Option<&str> {
    let (_year, rest) = leading_number(s, 4, 4)?;
    let (sep, end) = if rest.starts_with('年') {
        ('年', Some(('月', '日')))
    } else if rest.starts_with('-') {
        ('-', None)
    } else if rest.starts_with('/') {
        ('/', None)
    } else {
        return None;
    };
    let rest = rest.strip_prefix(sep)?;
    let (month, rest) = leading_number(rest, 1, 2)?;
    let rest = rest.strip_prefix(end.map_or(sep, |(m, _)| m))?;
    let (day, rest) = leading_number(rest, 1, 2)?;
    let rest = match end {
        Some((_, d)) => rest.strip_prefix(d)?,
        None => rest,
    };
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(rest)
}

/// `H:MM` or `H:MM:SS` on a 24-hour clock, the whole of `s`.
fn is_clock(s: &str) -> bool {
    let Some((hour, rest)) = leading_number(s, 1, 2) else {
        return false;
    };
    let mut rest = rest;
    let mut parts = 0;
    while let Some(r) = rest.strip_prefix(':') {
        match leading_number(r, 2, 2) {
            Some((v, r)) if v <= 59 => {
                parts += 1;
                rest = r;
            }
            _ => return false,
        }
    }
    hour <= 23 && (1..=2).contains(&parts) && rest.is_empty()
}

/// A date, a date and a time, or (unless `date_required`) a time alone.
fn is_moment(s: &str, date_required: bool) -> bool {
    let s = s.trim();
    match strip_date(s) {
        Some(rest) => rest.trim().is_empty() || is_clock(rest.trim()),
        None => !date_required && is_clock(s),
    }
}

/// One moment, or two joined by `~`; the second of a date range may be a time alone.
fn is_moment_range(s: &str, date_required: bool) -> bool {
    match s.split_once('~') {
        None => is_moment(s, date_required),
        Some((from, to)) => {
            !to.contains('~') && is_moment(from, date_required) && is_moment(to, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: &str, value: &str) -> Result<(), Problem> {
        check_value(value_type(kind).expect("a known type"), value)
    }

    fn ok(kind: &str, value: &str) -> bool {
        check(kind, value).is_ok()
    }

    fn data(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn error(v: Value) -> String {
        validate_subscribe_data(&data(v)).unwrap_err().to_string()
    }

    /// A string of `n` copies of `c`.
    fn rep(c: char, n: usize) -> String {
        std::iter::repeat_n(c, n).collect()
    }

    #[test]
    fn key_type_is_the_key_without_its_trailing_digits() {
        assert_eq!(key_type("thing1"), "thing");
        assert_eq!(key_type("character_string2"), "character_string");
        assert_eq!(key_type("amount10"), "amount");
        assert_eq!(key_type("phrase"), "phrase");
        assert_eq!(key_type("thing1.DATA"), "thing1.DATA");
        assert_eq!(key_type("12"), "");
    }

    #[test]
    fn every_type_is_in_the_table_once() {
        let names: Vec<&str> = VALUE_TYPES.iter().map(|t| t.name).collect();
        for want in [
            "thing",
            "number",
            "letter",
            "symbol",
            "character_string",
            "time",
            "date",
            "amount",
            "phone_number",
            "car_number",
            "name",
            "phrase",
            "enum",
        ] {
            assert_eq!(names.iter().filter(|n| **n == want).count(), 1, "{want}");
        }
        assert_eq!(names.len(), 13);
    }

    #[test]
    fn thing_is_20_characters_of_any_kind_chinese_counted_as_one() {
        assert!(ok("thing", &rep('a', 20)));
        assert!(ok("thing", &rep('配', 20)), "60 bytes, 20 characters");
        assert!(ok("thing", "Order #12 配送中! ✓"));
        assert_eq!(
            check("thing", &rep('a', 21)),
            Err(Problem::TooLong {
                len: 21,
                max: 20,
                unit: "characters",
                limit: "thing"
            })
        );
        assert!(!ok("thing", &rep('配', 21)));
        assert_eq!(check("thing", ""), Err(Problem::Empty { kind: "thing" }));
    }

    #[test]
    fn number_is_32_digits_with_one_optional_decimal_point() {
        assert!(ok("number", &rep('9', 32)));
        assert!(ok("number", &format!("{}.{}", rep('1', 16), rep('2', 16))));
        assert!(ok("number", "0"));
        assert!(ok("number", "3.14"));
        let over = check("number", &rep('9', 33)).unwrap_err();
        assert_eq!(
            over,
            Problem::TooLong {
                len: 33,
                max: 32,
                unit: "digits",
                limit: "number"
            }
        );
        assert!(!ok("number", &format!("{}.{}", rep('1', 16), rep('2', 17))));
        assert!(matches!(
            check("number", "12a"),
            Err(Problem::BadChar { ch: 'a', at: 3, .. })
        ));
        assert!(matches!(
            check("number", "-5"),
            Err(Problem::BadChar { ch: '-', at: 1, .. })
        ));
        assert!(matches!(
            check("number", "１２"),
            Err(Problem::BadChar { ch: '１', .. })
        ));
        for bad in ["1.2.3", ".5", "5.", "."] {
            assert!(
                matches!(check("number", bad), Err(Problem::Format { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn letter_is_32_ascii_letters() {
        assert!(ok("letter", &rep('x', 32)));
        assert!(ok("letter", "abcXYZ"));
        assert!(!ok("letter", &rep('x', 33)));
        assert!(matches!(
            check("letter", "abc1"),
            Err(Problem::BadChar { ch: '1', at: 4, .. })
        ));
        assert!(!ok("letter", "ab c"));
        assert!(!ok("letter", "配"));
        assert!(!ok("letter", "é"));
    }

    #[test]
    fn symbol_is_5_symbols() {
        assert!(ok("symbol", "%$#!?"));
        assert!(ok("symbol", "·，。"));
        assert!(!ok("symbol", "%$#!?*"));
        assert!(matches!(
            check("symbol", "%a"),
            Err(Problem::BadChar { ch: 'a', at: 2, .. })
        ));
        assert!(!ok("symbol", "1"));
        assert!(!ok("symbol", "配"));
    }

    #[test]
    fn character_string_is_32_ascii_letters_digits_or_symbols() {
        assert!(ok("character_string", &rep('Z', 32)));
        assert!(ok("character_string", "SF1234567-X_#"));
        assert!(!ok("character_string", &rep('Z', 33)));
        assert!(matches!(
            check("character_string", "SF配"),
            Err(Problem::BadChar {
                ch: '配',
                at: 3,
                ..
            })
        ));
    }

    #[test]
    fn phrase_is_5_chinese_characters() {
        assert!(ok("phrase", "配送中"));
        assert!(ok("phrase", "已经发货了"));
        assert_eq!(
            check("phrase", "已经发货了吧"),
            Err(Problem::TooLong {
                len: 6,
                max: 5,
                unit: "characters",
                limit: "phrase"
            })
        );
        assert!(matches!(
            check("phrase", "ok"),
            Err(Problem::BadChar { ch: 'o', at: 1, .. })
        ));
        assert!(!ok("phrase", "配送 中"));
        assert!(ok("phrase", "\u{20000}"), "an extension B ideograph");
    }

    #[test]
    fn name_is_10_with_chinese_or_20_letters_or_symbols() {
        assert!(ok("name", &rep('张', 10)));
        assert!(ok("name", "欧阳·娜娜"));
        assert!(ok("name", "张San"), "mixed counts as a Chinese name");
        assert_eq!(
            check("name", &rep('张', 11)),
            Err(Problem::TooLong {
                len: 11,
                max: 10,
                unit: "characters",
                limit: "name with Chinese characters"
            })
        );
        assert!(!ok("name", &format!("张{}", rep('a', 10))));
        assert!(ok("name", "John O'Neil-Smith"));
        assert!(ok("name", &rep('a', 20)));
        assert_eq!(
            check("name", &rep('a', 21)),
            Err(Problem::TooLong {
                len: 21,
                max: 20,
                unit: "characters",
                limit: "name without Chinese characters"
            })
        );
        assert!(matches!(
            check("name", "R2D2"),
            Err(Problem::BadChar { ch: '2', at: 2, .. })
        ));
    }

    #[test]
    fn phone_number_is_17_digits_or_symbols() {
        assert!(ok("phone_number", "+86-0766-66888866"));
        assert!(ok("phone_number", "+86 (138) 0013800"));
        assert!(ok("phone_number", &rep('1', 17)));
        assert!(!ok("phone_number", &rep('1', 18)));
        assert!(matches!(
            check("phone_number", "call 110"),
            Err(Problem::BadChar { ch: 'c', at: 1, .. })
        ));
    }

    #[test]
    fn car_number_is_8_letters_or_digits_first_and_last_may_be_chinese() {
        assert!(ok("car_number", "粤A8Z888挂"));
        assert!(ok("car_number", "粤A12345"));
        assert!(ok("car_number", "AB123456"));
        assert!(!ok("car_number", "粤A8Z8888挂"));
        assert!(matches!(
            check("car_number", "A1中2"),
            Err(Problem::BadChar {
                ch: '中',
                at: 3,
                ..
            })
        ));
        assert!(!ok("car_number", "粤A-12345"));
        assert!(
            ok("car_number", "粤"),
            "one Chinese character is first and last"
        );
    }

    #[test]
    fn amount_is_an_optional_currency_symbol_and_10_digits() {
        for good in [
            "¥100",
            "￥100.50",
            "$1234567890",
            "100元",
            "¥12.3元",
            "6000.00",
            "€12345.67890",
        ] {
            assert!(ok("amount", good), "{good}");
        }
        assert_eq!(
            check("amount", "¥12345678901"),
            Err(Problem::TooLong {
                len: 11,
                max: 10,
                unit: "digits",
                limit: "amount"
            })
        );
        assert!(!ok("amount", "¥123456.78901"));
        for bad in [
            "¥¥1", "1¥", "¥", "元", "-¥5", "¥1,000", "one", "¥1.2.3", "US$5",
        ] {
            assert!(
                matches!(check("amount", bad), Err(Problem::Format { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn time_is_a_24_hour_clock_optionally_after_a_date() {
        for good in [
            "15:01",
            "9:05",
            "23:59:59",
            "2019年10月1日 15:01",
            "2019-10-01 15:01",
            "2024-07-12",
            "15:01~16:30",
            "15:01 ~ 16:30",
            "2019年10月1日 15:01~2019年10月2日 15:01",
        ] {
            assert!(ok("time", good), "{good}");
        }
        for bad in [
            "24:00",
            "15:60",
            "15:1",
            "1501",
            "15:01~16:00~17:00",
            "noon",
            "15:01:02:03",
            "2019年13月1日",
        ] {
            assert!(
                matches!(check("time", bad), Err(Problem::Format { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn date_is_a_date_optionally_with_a_time() {
        for good in [
            "2019年10月1日",
            "2015年01月05日",
            "2019年10月1日 15:01",
            "2019-10-01",
            "2019/10/1 08:00",
            "2019年10月1日~2019年10月7日",
            "2019年10月1日 15:01~16:00",
        ] {
            assert!(ok("date", good), "{good}");
        }
        for bad in [
            "15:01",
            "2019-13-01",
            "2019-10-32",
            "2019年10月1",
            "19-10-01",
            "2019.10.01",
            "2019-10/01",
            "15:01~2019-10-01",
        ] {
            assert!(
                matches!(check("date", bad), Err(Problem::Format { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn enum_is_anything_but_empty() {
        assert!(ok("enum", "A"));
        assert!(ok("enum", &rep('x', 100)));
        assert!(!ok("enum", ""));
    }

    #[test]
    fn errors_name_the_field_its_type_the_limit_and_the_offence() {
        assert_eq!(
            error(json!({"thing1": {"value": rep('x', 22)}})),
            "thing1 is 22 characters, over the limit of 20 for thing"
        );
        assert_eq!(
            error(json!({"number2": {"value": rep('1', 33)}})),
            "number2 is 33 digits, over the limit of 32 for number"
        );
        let e = error(json!({"phrase3": {"value": "ok"}}));
        assert!(
            e.starts_with("phrase3 has 'o' at character 1, not allowed in phrase"),
            "{e}"
        );
        let e = error(json!({"letter1": {"value": "a\u{1b}[31m"}}));
        assert!(e.contains(r"'\u{1b}' at character 2"), "escaped: {e}");
        let e = error(json!({"keyword1": {"value": "x"}}));
        assert!(e.starts_with("keyword1 has type \"keyword\""), "{e}");
        assert!(e.contains("47003"), "{e}");
        let e = error(json!({"date4": {"value": "tomorrow"}}));
        assert!(e.starts_with("date4 is not a valid date ("), "{e}");
        assert_eq!(
            error(json!({"thing1": {"value": ""}})),
            "thing1 is empty, which WeChat refuses for thing"
        );
        assert!(error(json!({"thing1": {"value": true}})).starts_with("thing1 is not {"));
        assert!(error(json!({"thing1": "bare"})).starts_with("thing1 is not {"));
        // Every message stays short whatever the field and value.
        let long_field = format!("{}1", rep('k', 63));
        let e = error(json!({long_field: {"value": "x"}}));
        assert!(e.len() < 250, "{e}");
        for t in VALUE_TYPES.iter().filter(|t| t.name != "enum") {
            let e = error(json!({format!("{}1", t.name): {"value": rep('配', 10_000)}}));
            assert!(e.len() < 250, "{e}");
        }
    }

    #[test]
    fn numbers_are_checked_as_their_text_and_other_members_are_ignored() {
        assert!(validate_subscribe_data(&data(json!({"number1": {"value": 42}}))).is_ok());
        assert!(validate_subscribe_data(&data(json!({"number1": {"value": 4.5}}))).is_ok());
        assert!(validate_subscribe_data(&data(json!({"number1": {"value": -4}}))).is_err());
        assert!(validate_subscribe_data(&data(json!({"letter1": {"value": 42}}))).is_err());
        assert!(
            validate_subscribe_data(&data(json!({"thing1": {"value": "x", "color": 1}}))).is_ok()
        );
    }

    #[test]
    fn the_contract_section_7_example_is_refused_for_its_22_character_thing() {
        let example = json!({"thing1": {"value": "Your order has shipped"},
                             "character_string2": {"value": "SF1234567"}});
        assert_eq!(
            error(example),
            "thing1 is 22 characters, over the limit of 20 for thing"
        );
        let fixed = json!({"thing1": {"value": "Your order shipped"},
                           "character_string2": {"value": "SF1234567"}});
        assert!(validate_subscribe_data(&data(fixed)).is_ok());
    }

    /// Characters that exercise every rule: digits, letters, symbols, Chinese, separators,
    /// currency, controls, and characters outside the BMP.
    const INTERESTING: &str = "09aZ.:-/~ 年月日元¥$·，配送中\u{20000}😀\u{0}\n\u{1b}１";

    fn interesting_string() -> impl proptest::strategy::Strategy<Value = String> {
        let chars: Vec<char> = INTERESTING.chars().collect();
        proptest::collection::vec(proptest::sample::select(chars), 0..40)
            .prop_map(|cs| cs.into_iter().collect())
    }

    fn any_key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let names: Vec<&str> = VALUE_TYPES
            .iter()
            .map(|t| t.name)
            .chain(["keyword", ""])
            .collect();
        prop_oneof![
            (proptest::sample::select(names), 0u32..100).prop_map(|(n, i)| format!("{n}{i}")),
            any::<String>(),
        ]
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_string_values(
            key in any_key(),
            value in proptest::prelude::any::<String>(),
            odd in interesting_string(),
        ) {
            for v in [value, odd] {
                let d = data(json!({key.clone(): {"value": v.clone()}}));
                match validate_subscribe_data(&d) {
                    Ok(()) => {
                        let t = value_type(key_type(&key));
                        proptest::prop_assert!(t.is_some());
                        proptest::prop_assert!(!v.is_empty());
                        if let Some(ValueType { check: Check::Chars { max, .. }, .. }) = t {
                            proptest::prop_assert!(v.chars().count() <= *max);
                        }
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(&e.field, &key);
                        let text = e.to_string();
                        proptest::prop_assert!(text.starts_with(key.as_str()));
                        proptest::prop_assert!(text.len() < 250 + 8 * key.len(), "{}", text);
                    }
                }
            }
        }

        #[test]
        fn every_type_decides_on_any_value(
            t in proptest::sample::select(VALUE_TYPES),
            value in interesting_string(),
        ) {
            let _ = check_value(&t, &value);
        }

        #[test]
        fn any_json_in_a_field_is_decided(value in crate::upload::tests::json_value()) {
            let _ = validate_subscribe_data(&data(json!({"thing1": value.clone()})));
            let _ = validate_subscribe_data(&data(json!({"number1": {"value": value}})));
        }
    }
}
