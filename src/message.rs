//! `wxpush message status ID [--app APPID] [--json]` (contract 8.2): what became of a single
//! message, from what its published receipts left in Redis (`{ns}:ms:{<app>.<n>}:<day>`, kept
//! 9 days): its outcome, WeChat's errcode and msgid, when, and WeChat's delivery event if one
//! came. A message not sent yet, still being sent, or whose receipt is not out yet has none:
//! the command says so and exits 1, like `campaign status` for an unknown campaign.
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
        let receipts = bank
            .message_status(app, id)
            .await
            .map_err(|e| anyhow!("cannot read message {id}'s status: {e}"))?;
        if !receipts.is_empty() {
            found.push((app.clone(), receipts));
        }
    }
    let (app, receipts) = match found.len() {
        0 => {
            return Err(anyhow!(
                "no outcome of message {id} in namespace {} ({}): not sent yet, still being sent, or more than 9 days ago",
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
    let parsed: Vec<Value> = receipts
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    let send = parsed
        .iter()
        .find(|r| !matches!(r["outcome"].as_str(), Some("delivered" | "delivery_failed")));
    let delivery = parsed
        .iter()
        .find(|r| matches!(r["outcome"].as_str(), Some("delivered" | "delivery_failed")));
    if json {
        let out = json!({
            "messageId": id,
            "appId": app.as_str(),
            "openId": send.or(delivery).map(|r| r["openId"].clone()),
            "templateId": send.or(delivery).map(|r| r["templateId"].clone()),
            "outcome": send.map(|r| r["outcome"].clone()),
            "errcode": send.map(|r| r["errcode"].clone()),
            "msgid": send.map(|r| r["msgid"].clone()),
            "at": send.map(|r| r["at"].clone()),
            "delivery": delivery.map(|r| json!({"outcome": r["outcome"], "at": r["at"]})),
        });
        println!("{out}");
        return Ok(());
    }
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
        ("user", text(send.or(delivery), "openId")),
        ("template", text(send.or(delivery), "templateId")),
        ("outcome", text(send, "outcome")),
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
