//! Subscribe send rules: consents counted per (app, openId, template), data limits by key type
//! (47003 naming the field), miniprogram_state / lang values, msgid on success.

use serde_json::json;
use wxpush_fake_wechat::Endpoint;
use wxpush_wechat::{Lang, MiniprogramState, Outcome};

use crate::common::*;

#[tokio::test]
async fn each_consent_allows_one_message() {
    let (h, c, t) = ready().await;
    assert_eq!(h.grant_consents(None, "oUser1", SUB_TPL, 2), Ok(2));
    let mut m = subscribe("oUser1", good_data());
    m.miniprogram_state = Some(MiniprogramState::Formal);
    m.lang = Some(Lang::ZhCn);
    let a = c.send_subscribe(&t.token, &m).await;
    let b = c.send_subscribe(&t.token, &m).await;
    let (Outcome::Sent { msgid: Some(x) }, Outcome::Sent { msgid: Some(y) }) = (&a, &b) else {
        panic!("expected two sends with msgids, got {a:?} {b:?}");
    };
    assert_ne!(x, y);
    assert_eq!(c.send_subscribe(&t.token, &m).await, Outcome::NoConsent);
    assert_eq!(h.consents_left(None, "oUser1", SUB_TPL), Ok(0));
    assert_eq!(h.sends_to("oUser1"), 2);
    let last = h.requests().pop().expect("records");
    assert_eq!(last.endpoint, Endpoint::SubscribeSend);
    assert_eq!(last.errcode, Some(43101));
    assert_eq!(last.template_id.as_deref(), Some(SUB_TPL));
}

#[tokio::test]
async fn consents_are_per_template_and_per_app() {
    let (h, c, t) = ready().await;
    h.add_template(None, "TPL_OTHER").expect("template");
    h.grant_consents(None, "oUser1", "TPL_OTHER", 1)
        .expect("grant");
    h.grant_consents(Some(APP2), "oUser1", SUB_TPL, 1)
        .expect("grant");
    let out = c
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert_eq!(out, Outcome::NoConsent);
    assert_eq!(h.consents_left(None, "oUser1", "TPL_OTHER"), Ok(1));
}

#[tokio::test]
async fn a_data_value_breaking_its_type_answers_47003_naming_it() {
    let (h, c, t) = ready().await;
    h.grant_consents(None, "oUser1", SUB_TPL, 1).expect("grant");
    let cases = [
        (json!({"thing1": {"value": "x".repeat(21)}}), "thing1"),
        (json!({"phrase3": {"value": "shipped"}}), "phrase3"),
        (json!({"number2": {"value": "12a"}}), "number2"),
        (
            json!({"character_string9": {"value": "中文"}}),
            "character_string9",
        ),
        (json!({"amount4": {"value": "¥12345678901"}}), "amount4"),
        (json!({"name1": {"value": "张".repeat(11)}}), "name1"),
    ];
    for (data, field) in cases {
        let out = c.send_subscribe(&t.token, &subscribe("oUser1", data)).await;
        match out {
            Outcome::Permanent {
                code: 47003,
                errmsg,
            } => {
                assert!(
                    errmsg.contains(&format!("data.{field}.value")),
                    "{field}: {errmsg}"
                );
            }
            other => panic!("{field}: expected 47003, got {other:?}"),
        }
    }
    assert_eq!(
        h.consents_left(None, "oUser1", SUB_TPL),
        Ok(1),
        "nothing spent"
    );
    let out = c
        .send_subscribe(&t.token, &subscribe("oUser1", good_data()))
        .await;
    assert!(out.is_sent(), "{out:?}");
}

#[tokio::test]
async fn unknown_state_or_lang_answers_47003() {
    let (h, _c, t) = ready().await;
    h.grant_consents(None, "oUser1", SUB_TPL, 1).expect("grant");
    for extra in [
        json!({"miniprogram_state": "beta"}),
        json!({"lang": "fr_FR"}),
    ] {
        let mut body = json!({"touser": "oUser1", "template_id": SUB_TPL, "data": good_data()});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (_, answer) = send_json(
            &h,
            "POST",
            &format!("/cgi-bin/message/subscribe/send?access_token={}", t.token),
            &body.to_string(),
        )
        .await;
        assert_eq!(answer["errcode"], 47003, "{extra}");
    }
    assert_eq!(h.consents_left(None, "oUser1", SUB_TPL), Ok(1));
}

#[tokio::test]
async fn subscribe_to_unknown_user_or_template_is_permanent() {
    let (h, c, t) = ready().await;
    let out = c
        .send_subscribe(&t.token, &subscribe("oNobody", good_data()))
        .await;
    assert!(
        matches!(out, Outcome::Permanent { code: 40003, .. }),
        "{out:?}"
    );
    h.grant_consents(None, "oUser1", "TPL_UNCONFIGURED", 1)
        .expect("grant");
    let mut m = subscribe("oUser1", good_data());
    m.template_id = "TPL_UNCONFIGURED".into();
    let out = c.send_subscribe(&t.token, &m).await;
    assert!(
        matches!(out, Outcome::Permanent { code: 40037, .. }),
        "{out:?}"
    );
}
