//! `wxpush message status ID [--app APPID] [--json]` (contract 8.2): what became of a single
//! message, from what the senders and its published receipts left in Redis
//! (`{ns}:ms:{<app>.<n>}:<day>`, kept 9 days): the user it was sent to, its outcome, WeChat's
//! errcode and msgid, when, and WeChat's delivery event if one came. A message a sender took
//! but whose receipt is not out yet is `pending`; one no sender took yet (or older than 9
//! days) is unknown: the command says so and exits 1, like `campaign status` for an unknown
//! campaign.
//!
//! This module only reads; it must not change anything.

use anyhow::anyhow;
use serde_json::{json, Value};
use wxpush_domain::{AppId, Config};

use crate::status::Reader;

pub async fn status(
    config: &Config,
    id: &str,
    app: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    wxpush_domain::job::check_campaign_id(id).map_err(|e| {
        anyhow!(
            "message id: {}",
            e.to_string().replace("campaignId", "messageId")
        )
    })?;
    let apps: Vec<AppId> = match app.filter(|a| !a.is_empty()) {
        Some(a) => vec![AppId::new(a).map_err(|e| anyhow!("--app: {e}"))?],
        None => config.apps.iter().map(|a| a.id.clone()).collect(),
    };
    let bank = Reader::new(config)?.connection().await?;
    let mut found = Vec::new();
    for app in &apps {
        let status = bank
            .message_status(app, id)
            .await
            .map_err(|e| anyhow!("cannot read message {id}'s status: {e}"))?;
        if status != wxpush_bank::MessageStatus::default() {
            found.push((app.clone(), status));
        }
    }
    let (app, status) = match found.len() {
        0 => {
            return Err(anyhow!(
                "no message {id} in namespace {} ({}): no sender took it yet, or it was more than 9 days ago",
                config.namespace,
                crate::configured_apps(config)
            ))
        }
        1 => found.remove(0),
        _ => {
            let ids: Vec<&str> = found.iter().map(|(a, _)| a.as_str()).collect();
            return Err(anyhow!(
                "message {id} exists for several apps ({}): pass --app",
                ids.join(", ")
            ));
        }
    };
    if json {
        println!("{}", to_json(id, &app, &status));
        return Ok(());
    }
    let read = Receipts::of(&status);
    let (send, delivery, user) = (read.send.as_ref(), read.delivery.as_ref(), &read.user);
    let text = |r: Option<&Value>, k: &str| -> String {
        match r.map(|r| &r[k]) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(v) => v.to_string(),
        }
    };
    let at = |r: Option<&Value>| {
        r.and_then(|r| r["at"].as_i64())
            .map_or_else(|| "-".to_owned(), crate::status::format_utc)
    };
    let rows = [
        ("message", id.to_owned()),
        ("app", app.to_string()),
        (
            "user",
            user.as_ref()
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned(),
        ),
        ("template", text(send.or(delivery), "templateId")),
        (
            "outcome",
            send.map_or_else(|| "pending".to_owned(), |_| text(send, "outcome")),
        ),
        ("errcode", text(send, "errcode")),
        ("msgid", text(send, "msgid")),
        ("at", at(send)),
        ("delivery", text(delivery, "outcome")),
        ("delivery at", at(delivery)),
    ];
    for (k, v) in rows {
        println!("{k:<12}  {v}");
    }
    Ok(())
}

/// A message's receipts read from its status: the send's outcome, WeChat's delivery event, and
/// the user (the binding's openId, else the receipts').
struct Receipts {
    send: Option<Value>,
    delivery: Option<Value>,
    user: Option<Value>,
}

impl Receipts {
    fn of(status: &wxpush_bank::MessageStatus) -> Self {
        let parse = |r: &Option<String>| -> Option<Value> {
            r.as_deref().and_then(|r| serde_json::from_str(r).ok())
        };
        let (send, delivery) = (parse(&status.outcome), parse(&status.delivery));
        let user = status.open_id.clone().map(Value::String).or_else(|| {
            send.as_ref()
                .or(delivery.as_ref())
                .map(|r| r["openId"].clone())
        });
        Self {
            send,
            delivery,
            user,
        }
    }
}

/// A message's status as `--json` prints it (and the dashboard shows it).
pub(crate) fn to_json(id: &str, app: &AppId, status: &wxpush_bank::MessageStatus) -> Value {
    let read = Receipts::of(status);
    let (send, delivery, user) = (read.send.as_ref(), read.delivery.as_ref(), &read.user);
    json!({
        "messageId": id,
        "appId": app.as_str(),
        "openId": user,
        "templateId": send.or(delivery).map(|r| r["templateId"].clone()),
        "outcome": send.map_or_else(|| json!("pending"), |r| r["outcome"].clone()),
        "errcode": send.map(|r| r["errcode"].clone()),
        "msgid": send.map(|r| r["msgid"].clone()),
        "at": send.map(|r| r["at"].clone()),
        "delivery": delivery.map(|r| json!({"outcome": r["outcome"], "at": r["at"]})),
    })
}
