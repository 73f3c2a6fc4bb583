//! Template send rules: formIds and prepay_ids (owner, expiry, uses), unknown openId, unknown
//! template, page rule, and that nothing is spent by a refused send.

use std::time::Duration;

use wxpush_fake_wechat::{Endpoint, FakeApp};
use wxpush_wechat::Outcome;

use crate::common::*;

#[tokio::test]
async fn a_form_id_sends_once_then_answers_41029() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert_eq!(out, Outcome::Sent { msgid: None });
    assert_eq!(h.form_id_uses(&f), Some(1));
    assert_eq!(h.sends_to("oUser1"), 1);

    let out = c.send_template(&t.token, &template("oUser1", &f)).await;
    assert_eq!(out, Outcome::BadCredential { code: 41029 });
    assert_eq!(h.sends_to("oUser1"), 1);

    let sends: Vec<_> = h
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::TemplateSend)
        .collect();
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0].app_id.as_deref(), Some(APP));
    assert_eq!(sends[0].touser.as_deref(), Some("oUser1"));
    assert_eq!(sends[0].template_id.as_deref(), Some(TPL));
    assert_eq!(sends[0].form_id.as_deref(), Some(f.as_str()));
    assert_eq!(sends[0].errcode, Some(0));
    assert_eq!(sends[1].errcode, Some(41029));
    assert!(sends[0].at_ms > 1_600_000_000_000);
}

#[tokio::test]
async fn unknown_foreign_or_expired_form_ids_answer_41028() {
    let (h, c, t) = ready().await;
    let _ = form_id(&h, "oUser1");
    let others = form_id(&h, "oUser2");
    let expired = h
        .issue_form_ids(None, "oUser1", 1, Some(Duration::ZERO))
        .expect("issue")
        .remove(0);
    for f in [
        "0123456789abcdef0123456789abcdef",
        "the formId is a mock one",
        others.as_str(),
        expired.as_str(),
    ] {
        let out = c.send_template(&t.token, &template("oUser1", f)).await;
        assert_eq!(out, Outcome::BadCredential { code: 41028 }, "form_id {f}");
    }
    assert_eq!(h.form_id_uses(&others), Some(0));
    assert_eq!(h.stats().sends_accepted, 0);
}

#[tokio::test]
async fn a_form_id_of_another_app_answers_41028() {
    let (h, c, t) = ready().await;
    let other_app = h
        .issue_form_ids(Some(APP2), "oUser1", 1, None)
        .expect("issue")
        .remove(0);
    h.register_user(None, "oUser1").expect("register");
    let out = c
        .send_template(&t.token, &template("oUser1", &other_app))
        .await;
    assert_eq!(out, Outcome::BadCredential { code: 41028 });
}

#[tokio::test]
async fn a_prepay_id_sends_three_times() {
    let (h, c, t) = ready().await;
    let p = h
        .issue_prepay_ids(None, "oUser1", 1, None)
        .expect("issue")
        .remove(0);
    assert_eq!(p.len(), 36);
    for _ in 0..3 {
        let out = c.send_template(&t.token, &template("oUser1", &p)).await;
        assert!(out.is_sent(), "{out:?}");
    }
    let out = c.send_template(&t.token, &template("oUser1", &p)).await;
    assert_eq!(out, Outcome::BadCredential { code: 41029 });
    assert_eq!(h.form_id_uses(&p), Some(3));
    assert_eq!(h.sends_to("oUser1"), 3);
}

#[tokio::test]
async fn unknown_openid_and_template_are_permanent() {
    let (h, c, t) = ready().await;
    let f = form_id(&h, "oUser1");
    let out = c.send_template(&t.token, &template("oStranger", &f)).await;
    assert!(
        matches!(out, Outcome::Permanent { code: 40003, .. }),
        "{out:?}"
    );
    let mut m = template("oUser1", &f);
    m.template_id = "TPL_NOPE".into();
    let out = c.send_template(&t.token, &m).await;
    assert!(
        matches!(out, Outcome::Permanent { code: 40037, .. }),
        "{out:?}"
    );
    assert_eq!(h.form_id_uses(&f), Some(0), "nothing spent");

    h.add_template(None, "TPL_NOPE").expect("add template");
    assert!(c.send_template(&t.token, &m).await.is_sent());
}

#[tokio::test]
async fn a_registered_user_without_credentials_gets_41028_not_40003() {
    let (h, c, t) = ready().await;
    h.register_user(None, "oKnown").expect("register");
    let out = c
        .send_template(
            &t.token,
            &template("oKnown", "ffffffffffffffffffffffffffffffff"),
        )
        .await;
    assert_eq!(out, Outcome::BadCredential { code: 41028 });
}

#[tokio::test]
async fn pages_outside_the_allow_list_answer_41030() {
    let mut cfg = config();
    cfg.apps[0] = FakeApp::new(APP, SECRET)
        .with_templates([TPL])
        .with_pages(["index", "pages/order/detail"]);
    let h = start(cfg).await;
    let c = client(&h);
    let t = token(&c).await;
    let f = h.issue_form_ids(None, "oUser1", 3, None).expect("issue");
    let mut m = template("oUser1", &f[0]);
    m.page = Some("pages/secret/admin?x=1".into());
    let out = c.send_template(&t.token, &m).await;
    assert!(
        matches!(out, Outcome::Permanent { code: 41030, .. }),
        "{out:?}"
    );
    m.page = Some("pages/order/detail?id=9".into());
    assert!(c.send_template(&t.token, &m).await.is_sent());
    m.form_id = f[1].clone();
    m.page = None;
    assert!(c.send_template(&t.token, &m).await.is_sent());
}

#[tokio::test]
async fn a_malformed_body_answers_47001() {
    let (h, _c, t) = ready().await;
    let (status, body) = send_json(
        &h,
        "POST",
        &format!(
            "/cgi-bin/message/wxopen/template/send?access_token={}",
            t.token
        ),
        "{\"touser\": 5",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["errcode"], 47001);
}
