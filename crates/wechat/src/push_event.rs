//! What WeChat's message push says (contract §8.4; WECHAT.md "Message push"), read from JSON or
//! XML into one typed [`PushEvent`]: the subscribe popup, change and sent events, and the
//! secure-mode envelope around any of them ([`Envelope`]).
//!
//! WeChat's own quirks, taken as they come: `List` is an object for one item and an array for
//! several (in XML, one or several `<List>` elements inside the event's wrapper element);
//! numbers (`CreateTime`, `PopupScene`, `ErrorCode`, `MsgID`) arrive as numbers or as strings.
//! This module must not check signatures or decrypt (`push_crypto`), nor decide what an event
//! does to the bank.

use serde::Deserialize;

/// Why a push body could not be read. Says what was wrong, never the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushParseError {
    #[error("the push body is not valid {format}: {reason}")]
    Syntax {
        format: &'static str,
        reason: String,
    },
    #[error("the push has no {0}")]
    Missing(&'static str),
}

/// One push, as far as wxpush reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// The mini program's original id (`gh_...`).
    pub to_user: String,
    /// The user's openId.
    pub open_id: String,
    /// Unix seconds, WeChat's clock.
    pub create_time: i64,
    pub kind: PushEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEventKind {
    /// `subscribe_msg_popup_event`: the user answered a subscribe popup.
    Popup(Vec<Consent>),
    /// `subscribe_msg_change_event`: the user changed a template in the settings.
    Change(Vec<Consent>),
    /// `subscribe_msg_sent_event`: the asynchronous delivery of a message ended.
    Sent(Vec<Delivery>),
    /// Any other event or message type (its `Event`, or `MsgType` when it has none).
    Other(String),
}

/// A user's answer for one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub template_id: String,
    /// `SubscribeStatusString` is `accept`.
    pub accepted: bool,
    /// `PopupScene` (0: inside the mini program), when given.
    pub scene: Option<i64>,
}

/// The delivery of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub template_id: String,
    /// WeChat's `msgid`, as the send's reply gave it.
    pub msg_id: String,
    /// 0 when delivered.
    pub error_code: i64,
    pub error_status: String,
}

/// Secure mode's envelope: the app it is for and the sealed message (`push_crypto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub to_user: String,
    pub encrypt: String,
}

/// A number or a string holding one (read with a visitor of its own: quick-xml hands an
/// element to `deserialize_any` as a map holding its text).
#[derive(Debug, Clone)]
enum Num {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or a string holding one")
            }
            fn visit_i64<E>(self, n: i64) -> Result<Num, E> {
                Ok(Num::Int(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Num, E> {
                Ok(i64::try_from(n).map_or_else(|_| Num::Text(n.to_string()), Num::Int))
            }
            fn visit_str<E>(self, s: &str) -> Result<Num, E> {
                Ok(Num::Text(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Num, E> {
                Ok(Num::Text(s))
            }
            /// quick-xml hands an element to `deserialize_any` as a map of its text.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                let mut text = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    if key == "$text" || key == "$value" {
                        text = Some(value);
                    }
                }
                text.map(Num::Text)
                    .ok_or_else(|| serde::de::Error::custom("an element without text"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Num {
    fn value(&self) -> Option<i64> {
        match self {
            Num::Int(n) => Some(*n),
            Num::Text(t) => t.trim().parse().ok(),
        }
    }

    fn text(&self) -> String {
        match self {
            Num::Int(n) => n.to_string(),
            Num::Text(t) => t.trim().to_owned(),
        }
    }
}

/// One item or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<RawItem>),
    One(RawItem),
}

impl OneOrMany {
    fn items(self) -> Vec<RawItem> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(i) => vec![i],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawItem {
    #[serde(rename = "TemplateId", default)]
    template_id: Option<String>,
    #[serde(rename = "SubscribeStatusString", default)]
    status: Option<String>,
    #[serde(rename = "PopupScene", default)]
    scene: Option<Num>,
    #[serde(rename = "MsgID", default)]
    msg_id: Option<Num>,
    #[serde(rename = "ErrorCode", default)]
    error_code: Option<Num>,
    #[serde(rename = "ErrorStatus", default)]
    error_status: Option<String>,
}

/// The XML wrapper of an event's items: `<SubscribeMsgPopupEvent><List>..</List>...`.
#[derive(Debug, Clone, Default, Deserialize)]
struct Wrapper {
    #[serde(rename = "List", default)]
    list: Vec<RawItem>,
}

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    #[serde(rename = "ToUserName", default)]
    to_user: Option<String>,
    #[serde(rename = "FromUserName", default)]
    from_user: Option<String>,
    #[serde(rename = "CreateTime", default)]
    create_time: Option<Num>,
    #[serde(rename = "MsgType", default)]
    msg_type: Option<String>,
    #[serde(rename = "Event", default)]
    event: Option<String>,
    /// JSON: the items at the top level.
    #[serde(rename = "List", default)]
    list: Option<OneOrMany>,
    /// XML: the items inside the event's wrapper element.
    #[serde(rename = "SubscribeMsgPopupEvent", default)]
    popup: Option<Wrapper>,
    #[serde(rename = "SubscribeMsgChangeEvent", default)]
    change: Option<Wrapper>,
    #[serde(rename = "SubscribeMsgSentEvent", default)]
    sent: Option<Wrapper>,
    #[serde(rename = "Encrypt", default)]
    encrypt: Option<String>,
}

impl Raw {
    fn into_event(self) -> Result<PushEvent, PushParseError> {
        let to_user = self.to_user.ok_or(PushParseError::Missing("ToUserName"))?;
        let open_id = self
            .from_user
            .ok_or(PushParseError::Missing("FromUserName"))?;
        let create_time = self
            .create_time
            .and_then(|n| n.value())
            .ok_or(PushParseError::Missing("CreateTime"))?;
        let event = self.event.unwrap_or_default();
        let items = |wrapper: Option<Wrapper>, list: Option<OneOrMany>| -> Vec<RawItem> {
            match (wrapper, list) {
                (Some(w), _) if !w.list.is_empty() => w.list,
                (_, Some(l)) => l.items(),
                _ => Vec::new(),
            }
        };
        let consents = |raw: Vec<RawItem>| -> Vec<Consent> {
            raw.into_iter()
                .filter_map(|i| {
                    Some(Consent {
                        template_id: i.template_id?.trim().to_owned(),
                        accepted: i.status.as_deref().map(str::trim) == Some("accept"),
                        scene: i.scene.and_then(|n| n.value()),
                    })
                })
                .collect()
        };
        let kind = match event.trim() {
            "subscribe_msg_popup_event" => {
                PushEventKind::Popup(consents(items(self.popup, self.list)))
            }
            "subscribe_msg_change_event" => {
                PushEventKind::Change(consents(items(self.change, self.list)))
            }
            "subscribe_msg_sent_event" => PushEventKind::Sent(
                items(self.sent, self.list)
                    .into_iter()
                    .filter_map(|i| {
                        Some(Delivery {
                            template_id: i.template_id.unwrap_or_default().trim().to_owned(),
                            msg_id: i.msg_id?.text(),
                            error_code: i.error_code.and_then(|n| n.value()).unwrap_or(-1),
                            error_status: i.error_status.unwrap_or_default().trim().to_owned(),
                        })
                    })
                    .collect(),
            ),
            "" => PushEventKind::Other(self.msg_type.unwrap_or_default()),
            other => PushEventKind::Other(other.to_owned()),
        };
        Ok(PushEvent {
            to_user,
            open_id,
            create_time,
            kind,
        })
    }
}

fn json(body: &[u8]) -> Result<Raw, PushParseError> {
    serde_json::from_slice(body).map_err(|e| PushParseError::Syntax {
        format: "JSON",
        reason: e.to_string(),
    })
}

/// Deepest element nesting read: WeChat's pushes nest 4 deep. quick-xml's serde reader
/// recurses into nested elements, so deeper input (64 KiB holds thousands of levels) would
/// overflow the stack: it is refused before it is read.
pub const MAX_XML_DEPTH: usize = 32;

/// Whether `text`'s elements nest at most `max` deep. Tags are read with their quoted
/// attribute values, comments, CDATA sections and processing instructions skipped, so no
/// text inside them counts; anything unterminated ends the scan (the parser refuses it).
fn xml_depth_within(text: &[u8], max: usize) -> bool {
    fn find(text: &[u8], from: usize, what: &[u8]) -> Option<usize> {
        text.get(from..)?
            .windows(what.len())
            .position(|w| w == what)
            .map(|p| from + p)
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(lt) = text
        .get(i..)
        .and_then(|t| t.iter().position(|b| *b == b'<'))
    {
        i += lt;
        let rest = &text[i..];
        let skip_to = |end: &[u8]| find(text, i, end).map(|e| e + end.len());
        let next = if rest.starts_with(b"<![CDATA[") {
            skip_to(b"]]>")
        } else if rest.starts_with(b"<!--") {
            skip_to(b"-->")
        } else if rest.starts_with(b"<?") || rest.starts_with(b"<!") {
            skip_to(b">")
        } else {
            // A start or end tag: up to its '>' outside quotes.
            let mut quote = None;
            let mut end = None;
            for (k, &b) in rest.iter().enumerate().skip(1) {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, b'>') => {
                        end = Some(k);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return true;
            };
            if rest.starts_with(b"</") {
                depth = depth.saturating_sub(1);
            } else if rest[end - 1] != b'/' {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            Some(i + end + 1)
        };
        match next {
            Some(n) => i = n,
            None => return true,
        }
    }
    true
}

fn xml(body: &[u8]) -> Result<Raw, PushParseError> {
    let text = std::str::from_utf8(body).map_err(|_| PushParseError::Syntax {
        format: "XML",
        reason: "not UTF-8".into(),
    })?;
    if !xml_depth_within(body, MAX_XML_DEPTH) {
        return Err(PushParseError::Syntax {
            format: "XML",
            reason: format!("elements nest deeper than {MAX_XML_DEPTH}"),
        });
    }
    quick_xml::de::from_str(text).map_err(|e| PushParseError::Syntax {
        format: "XML",
        reason: e.to_string(),
    })
}

/// A plain (or decrypted) push in JSON.
pub fn parse_json(body: &[u8]) -> Result<PushEvent, PushParseError> {
    json(body)?.into_event()
}

/// A plain (or decrypted) push in XML (`<xml>...</xml>`).
pub fn parse_xml(body: &[u8]) -> Result<PushEvent, PushParseError> {
    xml(body)?.into_event()
}

/// Secure mode's envelope in JSON (`{"ToUserName":..,"Encrypt":..}`) or XML.
pub fn envelope(body: &[u8], is_xml: bool) -> Result<Envelope, PushParseError> {
    let raw = if is_xml { xml(body)? } else { json(body)? };
    Ok(Envelope {
        to_user: raw.to_user.ok_or(PushParseError::Missing("ToUserName"))?,
        encrypt: raw.encrypt.ok_or(PushParseError::Missing("Encrypt"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POPUP_XML_ONE: &str = "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\
        <FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>\
        <CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType>\
        <Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>\
        <List><TemplateId><![CDATA[TPL_A]]></TemplateId>\
        <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>\
        <PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent></xml>";

    #[test]
    fn a_popup_in_xml_with_one_item_or_two() {
        let e = parse_xml(POPUP_XML_ONE.as_bytes()).unwrap();
        assert_eq!(e.open_id, "otFpruAK8D-E6EfStSYonYSBZ8_4");
        assert_eq!(e.create_time, 1_610_969_440);
        assert_eq!(
            e.kind,
            PushEventKind::Popup(vec![Consent {
                template_id: "TPL_A".into(),
                accepted: true,
                scene: Some(2)
            }])
        );
        let two = POPUP_XML_ONE.replace(
            "</List></SubscribeMsgPopupEvent>",
            "</List><List><TemplateId>TPL_B</TemplateId>\
             <SubscribeStatusString>reject</SubscribeStatusString><PopupScene>0</PopupScene>\
             </List></SubscribeMsgPopupEvent>",
        );
        let PushEventKind::Popup(items) = parse_xml(two.as_bytes()).unwrap().kind else {
            panic!("a popup");
        };
        assert_eq!(items.len(), 2);
        assert!(items[0].accepted && !items[1].accepted);
        assert_eq!(items[1].template_id, "TPL_B");
    }

    #[test]
    fn json_lists_are_an_object_or_an_array_and_numbers_may_be_strings() {
        let one = br#"{"ToUserName":"gh_1","FromUserName":"oA","CreateTime":"1620973045",
            "MsgType":"event","Event":"subscribe_msg_popup_event",
            "List":{"TemplateId":"T1","SubscribeStatusString":"accept","PopupScene":"0"}}"#;
        let e = parse_json(one).unwrap();
        assert_eq!(e.create_time, 1_620_973_045);
        assert_eq!(
            e.kind,
            PushEventKind::Popup(vec![Consent {
                template_id: "T1".into(),
                accepted: true,
                scene: Some(0)
            }])
        );
        let many = br#"{"ToUserName":"gh_1","FromUserName":"oA","CreateTime":1620973045,
            "MsgType":"event","Event":"subscribe_msg_change_event",
            "List":[{"TemplateId":"T1","SubscribeStatusString":"reject"},
                    {"TemplateId":"T2","SubscribeStatusString":"reject"}]}"#;
        let PushEventKind::Change(items) = parse_json(many).unwrap().kind else {
            panic!("a change");
        };
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|c| !c.accepted));
        let sent = br#"{"ToUserName":"gh_1","FromUserName":"oA","CreateTime":1,
            "MsgType":"event","Event":"subscribe_msg_sent_event",
            "List":{"TemplateId":"T1","MsgID":1864323726461255680,"ErrorCode":"0",
                    "ErrorStatus":"success"}}"#;
        assert_eq!(
            parse_json(sent).unwrap().kind,
            PushEventKind::Sent(vec![Delivery {
                template_id: "T1".into(),
                msg_id: "1864323726461255680".into(),
                error_code: 0,
                error_status: "success".into()
            }])
        );
    }

    #[test]
    fn other_events_envelopes_and_bad_bodies() {
        let other = br#"{"ToUserName":"gh_1","FromUserName":"oA","CreateTime":1,"MsgType":"text"}"#;
        assert_eq!(
            parse_json(other).unwrap().kind,
            PushEventKind::Other("text".into())
        );
        let env = envelope(
            b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt></xml>",
            true,
        )
        .unwrap();
        assert_eq!(
            env,
            Envelope {
                to_user: "gh_1".into(),
                encrypt: "abc=".into()
            }
        );
        assert_eq!(
            envelope(br#"{"ToUserName":"gh_1"}"#, false),
            Err(PushParseError::Missing("Encrypt"))
        );
        assert!(matches!(
            parse_json(b"{nope"),
            Err(PushParseError::Syntax { format: "JSON", .. })
        ));
        assert!(matches!(
            parse_xml(b"<xml><a></xml>"),
            Err(PushParseError::Syntax { .. })
        ));
        assert_eq!(
            parse_json(br#"{"ToUserName":"gh_1","CreateTime":1}"#),
            Err(PushParseError::Missing("FromUserName"))
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::push_crypto::PushCipher;
    use proptest::prelude::*;

    fn item() -> impl Strategy<Value = (String, bool, Option<i64>)> {
        (
            "[A-Za-z0-9_-]{1,40}",
            any::<bool>(),
            proptest::option::of(0i64..4),
        )
    }

    fn json_body(
        who: &str,
        at: i64,
        items: &[(String, bool, Option<i64>)],
        as_array: bool,
    ) -> String {
        let list: Vec<serde_json::Value> = items
            .iter()
            .map(|(t, ok, scene)| {
                let mut v = serde_json::json!({"TemplateId": t,
                    "SubscribeStatusString": if *ok { "accept" } else { "reject" }});
                if let Some(s) = scene {
                    v["PopupScene"] = serde_json::json!(s.to_string());
                }
                v
            })
            .collect();
        let list = match list.as_slice() {
            [one] if !as_array => one.clone(),
            _ => serde_json::Value::Array(list),
        };
        serde_json::json!({"ToUserName": "gh_1", "FromUserName": who, "CreateTime": at,
            "MsgType": "event", "Event": "subscribe_msg_popup_event", "List": list})
        .to_string()
    }

    fn xml_body(who: &str, at: i64, items: &[(String, bool, Option<i64>)]) -> String {
        let mut lists = String::new();
        for (t, ok, scene) in items {
            lists.push_str(&format!(
                "<List><TemplateId><![CDATA[{t}]]></TemplateId><SubscribeStatusString>\
                 <![CDATA[{}]]></SubscribeStatusString>",
                if *ok { "accept" } else { "reject" }
            ));
            if let Some(s) = scene {
                lists.push_str(&format!("<PopupScene>{s}</PopupScene>"));
            }
            lists.push_str("</List>");
        }
        format!(
            "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{who}]]>\
             </FromUserName><CreateTime>{at}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>\
             {lists}</SubscribeMsgPopupEvent></xml>"
        )
    }

    fn expected(items: &[(String, bool, Option<i64>)]) -> PushEventKind {
        PushEventKind::Popup(
            items
                .iter()
                .map(|(t, ok, scene)| Consent {
                    template_id: t.clone(),
                    accepted: *ok,
                    scene: *scene,
                })
                .collect(),
        )
    }

    #[test]
    fn nesting_is_counted_outside_quotes_comments_and_cdata() {
        assert!(xml_depth_within(b"<a><b/><c></c></a>", 2));
        assert!(!xml_depth_within(b"<a><b><c></c></b></a>", 2));
        // A '>' or '/>' inside an attribute's quotes does not end the tag.
        assert!(!xml_depth_within(b"<a x=\"/>\"><a y='/>'><a>", 2));
        // Tags inside CDATA or a comment are text.
        assert!(xml_depth_within(
            b"<a><![CDATA[<b><c><d>]]><!-- <e><f> --></a>",
            1
        ));
        assert!(xml_depth_within(
            b"<?xml version=\"1.0\"?><!DOCTYPE x><a></a>",
            1
        ));
        assert!(
            xml_depth_within(b"<a><b", 1),
            "unterminated: left to the parser"
        );
    }

    /// Deep nesting (what 64 KiB can hold) is an error or an event, not a stack overflow.
    #[test]
    fn deeply_nested_bodies_do_not_overflow_the_stack() {
        let depth = 64 * 1024 / 7;
        for inner in ["a", "List", "SubscribeMsgPopupEvent"] {
            let xml = format!(
                "<xml><FromUserName>oA</FromUserName><{inner}>{}{}</{inner}></xml>",
                "<a>".repeat(depth),
                "</a>".repeat(depth)
            );
            let _ = parse_xml(xml.as_bytes());
            let _ = envelope(xml.as_bytes(), true);
        }
        let json = format!("{{\"List\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        let _ = parse_json(json.as_bytes());
        let json = format!(
            "{{\"x\":{}1{}}}",
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        );
        let _ = parse_json(json.as_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Any bytes at all: an event or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_json(&body);
            let _ = parse_xml(&body);
            let _ = envelope(&body, true);
            let _ = envelope(&body, false);
        }

        /// Text shaped like a push, cut or spliced anywhere: never a panic.
        #[test]
        fn damaged_pushes_never_panic(
            items in proptest::collection::vec(item(), 1..4),
            cut in any::<prop::sample::Index>(),
            junk in "[<>{}\\[\\]\"&;/A-Za-z0-9 ]{0,12}",
        ) {
            for body in [json_body("oA", 1, &items, false), xml_body("oA", 1, &items)] {
                let at = cut.index(body.len() + 1);
                let at = (0..=at).rev().find(|i| body.is_char_boundary(*i)).unwrap_or(0);
                let damaged = format!("{}{junk}{}", &body[..at], &body[at..]);
                let truncated = &body[..at];
                for b in [damaged.as_bytes(), truncated.as_bytes()] {
                    let _ = parse_json(b);
                    let _ = parse_xml(b);
                }
            }
        }

        /// A popup of one item or several reads back the same in JSON (List an object or an
        /// array) and in XML.
        #[test]
        fn popups_read_back_in_json_and_xml(
            who in "o[A-Za-z0-9_-]{5,30}",
            at in 0i64..4_000_000_000,
            items in proptest::collection::vec(item(), 1..6),
            as_array in any::<bool>(),
        ) {
            let want = expected(&items);
            let j = parse_json(json_body(&who, at, &items, as_array).as_bytes()).unwrap();
            prop_assert_eq!(&j.kind, &want);
            prop_assert_eq!(j.create_time, at);
            prop_assert_eq!(&j.open_id, &who);
            let x = parse_xml(xml_body(&who, at, &items).as_bytes()).unwrap();
            prop_assert_eq!(&x.kind, &want);
            prop_assert_eq!(x.create_time, at);
        }

        /// Sealed and opened again, whatever the message; arbitrary `Encrypt` text opens to an
        /// error, never a panic.
        #[test]
        fn the_envelope_round_trips_and_never_panics(
            message in proptest::collection::vec(any::<u8>(), 0..300),
            random in any::<[u8; 16]>(),
            junk in "[A-Za-z0-9+/=]{0,200}",
        ) {
            let cipher = PushCipher::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
            let sealed = cipher.seal(&message, "wx1", random);
            prop_assert_eq!(cipher.open(&sealed, "wx1").unwrap(), message);
            prop_assert!(cipher.open(&sealed, "wx2").is_err());
            let _ = cipher.open(&junk, "wx1");
        }
    }
}
