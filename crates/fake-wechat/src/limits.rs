//! WeChat's limits on subscribe-message data values, by key type (the key name without its
//! trailing digits: `thing1` is a `thing`), as the fake enforces them.
//!
//! This module owns the limits table and nothing else; it must not touch the fake's state. The
//! table follows WECHAT.md (from copies of the removed official table):
//!
//! | type | rule |
//! |---|---|
//! | `thing` | ≤ 20 characters |
//! | `number` | ≤ 32 digits, one decimal point allowed |
//! | `letter` | ≤ 32 ASCII letters |
//! | `symbol` | ≤ 5 characters, none a letter or digit |
//! | `character_string` | ≤ 32 ASCII letters, digits or symbols |
//! | `phrase` | ≤ 5 characters, Chinese only |
//! | `name` | ≤ 10 Chinese characters (`·` allowed), or ≤ 20 ASCII letters/spaces/symbols |
//! | `phone_number` | ≤ 17 characters: digits, `+`, `-`, `(`, `)`, spaces |
//! | `car_number` | ≤ 8 characters: letters/digits; the first and last may be Chinese |
//! | `amount` | optional currency symbol, ≤ 10 digits with an optional decimal point, optional trailing `元` |
//! | `time` | `H:MM[:SS]`, optionally preceded by a date; ranges joined by `~` |
//! | `date` | `YYYY年M月D日`, `YYYY-M-D` or `YYYY/M/D`, optionally followed by a time; ranges by `~` |
//! | `enum` | ≤ 20 characters (the fake does not know templates' value lists) |
//!
//! Every value must be a non-empty string. A key of any other type is refused (real subscribe
//! templates only have typed keys).

use serde_json::Value;

/// The key type: the key without its trailing digits.
pub fn key_type(key: &str) -> &str {
    key.trim_end_matches(|c: char| c.is_ascii_digit())
}

fn is_chinese(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{20000}'..='\u{2A6DF}')
}

const CURRENCY: &[char] = &['¥', '￥', '$', '€', '£', '₩', '₹'];

fn decimal_digits(s: &str, max_digits: usize) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    all_digits(int)
        && frac.is_none_or(all_digits)
        && int.len() + frac.map_or(0, str::len) <= max_digits
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
}

/// `YYYY年M月D日`, `YYYY-M-D` or `YYYY/M/D`; returns what follows.
fn strip_date(s: &str) -> Option<&str> {
    let year = s.get(..4).filter(|y| digits(y, 4, 4))?;
    let _ = year;
    let rest = &s[4..];
    let (sep1, sep2, end) = if rest.starts_with('年') {
        ('年', '月', Some('日'))
    } else if rest.starts_with('-') {
        ('-', '-', None)
    } else if rest.starts_with('/') {
        ('/', '/', None)
    } else {
        return None;
    };
    let rest = rest.strip_prefix(sep1)?;
    let (month, rest) = rest.split_once(sep2)?;
    let day_len = rest.chars().take_while(char::is_ascii_digit).count();
    let (day, rest) = rest.split_at(day_len);
    let rest = match end {
        Some(e) => rest.strip_prefix(e)?,
        None => rest,
    };
    let ok = digits(month, 1, 2)
        && digits(day, 1, 2)
        && (1..=12).contains(&month.parse::<u32>().ok()?)
        && (1..=31).contains(&day.parse::<u32>().ok()?);
    ok.then_some(rest)
}

/// `H:MM` or `H:MM:SS`, 24-hour clock, the whole string.
fn is_clock(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) || !digits(parts[0], 1, 2) {
        return false;
    }
    let h: u32 = parts[0].parse().unwrap_or(99);
    h <= 23
        && parts[1..]
            .iter()
            .all(|p| digits(p, 2, 2) && p.parse::<u32>().is_ok_and(|v| v <= 59))
}

fn is_moment(s: &str, date_required: bool) -> bool {
    let s = s.trim();
    match strip_date(s) {
        Some(rest) => rest.trim().is_empty() || is_clock(rest.trim()),
        None => !date_required && is_clock(s),
    }
}

fn is_moment_range(s: &str, date_required: bool) -> bool {
    s.split('~').all(|p| is_moment(p, date_required))
}

/// Whether `value` is acceptable for a key of type `kind`; `None` for an unknown type.
pub fn value_ok(kind: &str, value: &str) -> Option<bool> {
    let n = value.chars().count();
    let ok = n > 0
        && match kind {
            "thing" => n <= 20,
            "number" => n <= 33 && decimal_digits(value, 32),
            "letter" => n <= 32 && value.chars().all(|c| c.is_ascii_alphabetic()),
            "symbol" => n <= 5 && value.chars().all(|c| !c.is_alphanumeric()),
            "character_string" => n <= 32 && value.chars().all(|c| c.is_ascii_graphic()),
            "phrase" => n <= 5 && value.chars().all(is_chinese),
            "name" => {
                (n <= 10 && value.chars().all(|c| is_chinese(c) || c == '·'))
                    || (n <= 20
                        && value
                            .chars()
                            .all(|c| c == ' ' || (c.is_ascii_graphic() && !c.is_ascii_digit())))
            }
            "phone_number" => {
                n <= 17
                    && value
                        .chars()
                        .all(|c| c.is_ascii_digit() || "+-() ".contains(c))
            }
            "car_number" => {
                n <= 8
                    && value.chars().enumerate().all(|(i, c)| {
                        c.is_ascii_alphanumeric() || ((i == 0 || i == n - 1) && is_chinese(c))
                    })
            }
            "amount" => {
                let v = value.strip_suffix('元').unwrap_or(value);
                let v = v.strip_prefix(CURRENCY).unwrap_or(v);
                decimal_digits(v, 10)
            }
            "time" => is_moment_range(value, false),
            "date" => is_moment_range(value, true),
            "enum" => n <= 20,
            _ => return None,
        };
    Some(ok)
}

/// Checks a subscribe message's `data`; on failure returns WeChat's 47003 errmsg naming the
/// field, e.g. `argument invalid! data.thing1.value invalid`.
pub fn validate_data(data: &Value) -> Result<(), String> {
    let Some(map) = data.as_object() else {
        return Err("argument invalid! data invalid".to_owned());
    };
    for (key, item) in map {
        let value = item.get("value").and_then(Value::as_str);
        match value {
            None => return Err(format!("argument invalid! data.{key}.value invalid")),
            Some("") => return Err(format!("argument invalid! data.{key}.value is empty")),
            Some(v) => {
                if value_ok(key_type(key), v) != Some(true) {
                    return Err(format!("argument invalid! data.{key}.value invalid"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(kind: &str, v: &str) -> bool {
        value_ok(kind, v) == Some(true)
    }

    #[test]
    fn key_type_strips_trailing_digits() {
        assert_eq!(key_type("thing12"), "thing");
        assert_eq!(key_type("character_string2"), "character_string");
        assert_eq!(key_type("phrase"), "phrase");
    }

    #[test]
    fn each_type_has_its_rule() {
        assert!(ok("thing", &"字".repeat(20)));
        assert!(!ok("thing", &"a".repeat(21)));
        assert!(ok("number", "12345.67"));
        assert!(!ok("number", "12a"));
        assert!(!ok("number", &"1".repeat(33)));
        assert!(ok("letter", "abcXYZ"));
        assert!(!ok("letter", "abc1"));
        assert!(ok("symbol", "%$#"));
        assert!(!ok("symbol", "!!!!!!"));
        assert!(!ok("symbol", "a"));
        assert!(ok("character_string", "SF1234567-X"));
        assert!(!ok("character_string", "中文"));
        assert!(!ok("character_string", &"a".repeat(33)));
        assert!(ok("phrase", "已发货"));
        assert!(!ok("phrase", "shipped"));
        assert!(!ok("phrase", "已经发货了吧"));
        assert!(ok("name", "张三"));
        assert!(ok("name", "John Smith"));
        assert!(!ok("name", &"张".repeat(11)));
        assert!(!ok("name", "R2D2"));
        assert!(ok("phone_number", "+86 138-0013-8000"));
        assert!(!ok("phone_number", "+86 138 0013 80000"));
        assert!(!ok("phone_number", "call me"));
        assert!(ok("car_number", "粤A12345"));
        assert!(ok("car_number", "粤B1234学"));
        assert!(!ok("car_number", "粤A123456X"));
        assert!(!ok("car_number", "A1中2"));
        assert!(ok("amount", "¥100.50"));
        assert!(ok("amount", "100元"));
        assert!(!ok("amount", "¥12345678901"));
        assert!(!ok("amount", "¥¥1"));
        assert!(ok("time", "15:01"));
        assert!(ok("time", "2019年10月1日 15:01"));
        assert!(ok("time", "15:01 ~ 16:30"));
        assert!(!ok("time", "25:00"));
        assert!(ok("date", "2019-10-01"));
        assert!(ok("date", "2019年10月1日 15:01"));
        assert!(!ok("date", "15:01"));
        assert!(!ok("date", "2019-13-01"));
        assert!(ok("enum", "A"));
        assert_eq!(value_ok("keyword", "x"), None);
        assert!(!ok("thing", ""));
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(
            validate_data(&json!({"thing1": {"value": "ok"}, "phrase3": {"value": "not chinese"}})),
            Err("argument invalid! data.phrase3.value invalid".to_owned())
        );
        assert!(
            validate_data(&json!({"thing1": {"value": "ok"}, "number2": {"value": "3"}})).is_ok()
        );
        assert!(validate_data(&json!({"thing1": "bare"})).is_err());
        assert!(validate_data(&json!({"keyword1": {"value": "x"}})).is_err());
        assert!(validate_data(&json!([1])).is_err());
    }
}
