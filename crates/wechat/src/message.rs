//! The messages wxpush sends and their exact JSON bodies on the wire.
//!
//! This module owns the request bodies of the template and subscribe send APIs. It must not
//! validate data values against WeChat's per-type limits (a validator elsewhere does that).
//! Template data goes out as the campaign gave it (contract section 5): each field's `value`
//! and whatever else it carried (`color`, which WeChat now ignores, included); nothing is
//! added.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wxpush_domain::{DataItem, OpenId};

/// A formId / prepay_id template message (`/cgi-bin/message/wxopen/template/send`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateMessage {
    pub touser: OpenId,
    pub template_id: String,
    /// Mini-program page opened by a tap, e.g. `index?foo=bar`. Omitted when `None`.
    pub page: Option<String>,
    /// The formId or prepay_id spent on this message.
    pub form_id: String,
    /// Keyword name (`keyword1`, ...) to its value and what else the campaign gave; sent as
    /// `{"keyword1": {"value": .., ...}}`.
    pub data: BTreeMap<String, DataItem>,
    /// E.g. `keyword1.DATA`. Omitted when `None`.
    pub emphasis_keyword: Option<String>,
}

impl TemplateMessage {
    pub(crate) fn body(&self) -> Value {
        let data: Map<String, Value> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.to_wechat()))
            .collect();
        let mut body = json!({
            "touser": self.touser.as_str(),
            "template_id": self.template_id,
            "form_id": self.form_id,
            "data": data,
        });
        if let Some(page) = &self.page {
            body["page"] = json!(page);
        }
        if let Some(k) = &self.emphasis_keyword {
            body["emphasis_keyword"] = json!(k);
        }
        body
    }
}

/// Which version of the mini program a subscribe message opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MiniprogramState {
    Developer,
    Trial,
    Formal,
}

/// The language of a subscribe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lang {
    #[serde(rename = "zh_CN")]
    ZhCn,
    #[serde(rename = "en_US")]
    EnUs,
    #[serde(rename = "zh_HK")]
    ZhHk,
    #[serde(rename = "zh_TW")]
    ZhTw,
}

impl MiniprogramState {
    pub fn as_str(self) -> &'static str {
        match self {
            MiniprogramState::Developer => "developer",
            MiniprogramState::Trial => "trial",
            MiniprogramState::Formal => "formal",
        }
    }
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh_CN",
            Lang::EnUs => "en_US",
            Lang::ZhHk => "zh_HK",
            Lang::ZhTw => "zh_TW",
        }
    }
}

/// A value that is not one of WeChat's `miniprogram_state` or `lang` values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    what: &'static str,
    value: String,
}

impl FromStr for MiniprogramState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Developer, Self::Trial, Self::Formal]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "miniprogram_state",
                value: s.to_owned(),
            })
    }
}

impl FromStr for Lang {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::ZhCn, Self::EnUs, Self::ZhHk, Self::ZhTw]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "lang",
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for MiniprogramState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscribe message (`/cgi-bin/message/subscribe/send`), spending one consent.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeMessage {
    pub touser: OpenId,
    pub template_id: String,
    /// Omitted when `None`.
    pub page: Option<String>,
    /// Passed through as given, e.g. `{"thing1": {"value": "Your order has shipped"}}`.
    pub data: Map<String, Value>,
    /// Omitted when `None` (WeChat then uses `formal`).
    pub miniprogram_state: Option<MiniprogramState>,
    /// Omitted when `None` (WeChat then uses `zh_CN`).
    pub lang: Option<Lang>,
}

impl SubscribeMessage {
    pub(crate) fn body(&self) -> Value {
        let mut body = json!({
            "touser": self.touser.as_str(),
            "template_id": self.template_id,
            "data": self.data,
        });
        if let Some(page) = &self.page {
            body["page"] = json!(page);
        }
        if let Some(s) = self.miniprogram_state {
            body["miniprogram_state"] = json!(s.as_str());
        }
        if let Some(l) = self.lang {
            body["lang"] = json!(l.as_str());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_id() -> OpenId {
        OpenId::new("oLvT05Abc").expect("valid openId")
    }

    #[test]
    fn template_body_is_wechats_shape() {
        let mut data = BTreeMap::new();
        data.insert("keyword1".to_owned(), DataItem::text("339208499"));
        data.insert("keyword2".to_owned(), DataItem::text("2015-01-05 12:30"));
        let m = TemplateMessage {
            touser: open_id(),
            template_id: "TPL".into(),
            page: Some("index?foo=bar".into()),
            form_id: "FORMID".into(),
            data,
            emphasis_keyword: Some("keyword1.DATA".into()),
        };
        assert_eq!(
            m.body(),
            json!({"touser": "oLvT05Abc", "template_id": "TPL", "page": "index?foo=bar",
                   "form_id": "FORMID",
                   "data": {"keyword1": {"value": "339208499"},
                            "keyword2": {"value": "2015-01-05 12:30"}},
                   "emphasis_keyword": "keyword1.DATA"})
        );
        let bare = TemplateMessage {
            page: None,
            emphasis_keyword: None,
            ..m
        };
        let b = bare.body();
        assert!(b.get("page").is_none());
        assert!(b.get("emphasis_keyword").is_none());
        assert!(!b.to_string().contains("color"), "nothing is added");
    }

    #[test]
    fn template_data_goes_out_as_the_campaign_gave_it() {
        let item = |v: Value| DataItem::from_json(&v).expect("a data item");
        let m = TemplateMessage {
            touser: open_id(),
            template_id: "TPL".into(),
            page: None,
            form_id: "F".into(),
            data: BTreeMap::from([
                (
                    "keyword1".to_owned(),
                    item(json!({"value": "Weekly report", "color": "#173177"})),
                ),
                (
                    "keyword2".to_owned(),
                    item(json!({"value": "3", "unknownField": {"a": [1]}})),
                ),
            ]),
            emphasis_keyword: None,
        };
        assert_eq!(
            m.body()["data"],
            json!({"keyword1": {"value": "Weekly report", "color": "#173177"},
                   "keyword2": {"value": "3", "unknownField": {"a": [1]}}})
        );
    }

    #[test]
    fn subscribe_body_is_wechats_shape() {
        let data = json!({"thing1": {"value": "shipped"}, "character_string2": {"value": "SF1"}});
        let m = SubscribeMessage {
            touser: open_id(),
            template_id: "TPL_ORDER".into(),
            page: Some("pages/order/detail?id=1".into()),
            data: data.as_object().cloned().unwrap_or_default(),
            miniprogram_state: Some(MiniprogramState::Formal),
            lang: Some(Lang::ZhCn),
        };
        assert_eq!(
            m.body(),
            json!({"touser": "oLvT05Abc", "template_id": "TPL_ORDER",
                   "page": "pages/order/detail?id=1", "data": data,
                   "miniprogram_state": "formal", "lang": "zh_CN"})
        );
        let bare = SubscribeMessage {
            page: None,
            miniprogram_state: None,
            lang: None,
            ..m
        };
        let b = bare.body();
        for k in ["page", "miniprogram_state", "lang"] {
            assert!(b.get(k).is_none(), "{k} present");
        }
    }

    #[test]
    fn state_and_lang_parse() {
        assert_eq!(
            "trial".parse::<MiniprogramState>(),
            Ok(MiniprogramState::Trial)
        );
        assert_eq!("en_US".parse::<Lang>(), Ok(Lang::EnUs));
        assert!("beta".parse::<MiniprogramState>().is_err());
        assert!("fr".parse::<Lang>().is_err());
    }
}
