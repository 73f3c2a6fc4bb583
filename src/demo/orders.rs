//! The demo's third act: orders shipping. The demo's second app (`consent_source =
//! "events"`, secure mode) gets its consents from WeChat's `subscribe_msg_popup_event`s,
//! pushed by the fake to the real `wxpush events`; then, as orders ship, one single message
//! per order (`<ns>.messages`) carrying that user's own order number, a few published twice;
//! then WeChat's `subscribe_msg_sent_event` for each message it delivered, which `wxpush
//! events` turns into a `delivered` receipt. A queue of the demo's own bound to
//! `<ns>.receipts` collects every receipt.
//!
//! This module owns the shoppers, the pushes, the order messages and the receipts' tap. It
//! must not judge the outcome (the checks do) nor print the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use serde_json::json;
use wxpush_broker::{Publisher, Topology};
use wxpush_domain::{AppId, OpenId};
use wxpush_fake_wechat::{
    push_event, Endpoint, FakeHandle, PushFormat, PushItem, PushKind, PushSpec, RequestRecord,
};
use wxpush_roles::Deps;

use super::fleet::Fleet;
use super::{fmt_secs, random_u64, OrdersApp, Rng, SUB_TEMPLATE};

/// Shoppers in the third act, at most.
const MAX_SHOPPERS: usize = 100;
/// Batches the orders ship in, and the pause between two.
const SHIPPING_WAVES: usize = 6;
const WAVE_PAUSE: Duration = Duration::from_millis(500);

/// What a shopper answered the order-shipped prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Popup {
    /// Accepted; WeChat pushed the event once.
    Accepted,
    /// Accepted; WeChat pushed the event twice (it got no answer the first time, say).
    AcceptedPushedTwice,
    /// Declined: the event says `reject`.
    Declined,
    /// Never shown the prompt: no event.
    NeverAsked,
}

impl Popup {
    pub(super) fn accepted(self) -> bool {
        matches!(self, Popup::Accepted | Popup::AcceptedPushedTwice)
    }
}

pub(super) struct Shopper {
    pub open_id: String,
    pub popup: Popup,
    /// The order number the message carries (`character_string1`).
    pub order: String,
    pub message_id: String,
    /// The message was published twice.
    pub twice: bool,
}

/// What the third act did and saw.
pub(super) struct Act {
    pub app: AppId,
    pub shoppers: Vec<Shopper>,
    /// Each shopper's consents in the bank after the popups (shoppers' order).
    pub consents: Vec<u64>,
    /// Messages published (repeats included), and over how long.
    pub published: u64,
    pub shipped_in: Duration,
    /// Every receipt the demo's queue got: (routing key, receipt).
    pub receipts: Vec<(String, serde_json::Value)>,
    /// The fake's subscribe sends for the app.
    pub sends: Vec<RequestRecord>,
    /// Sent events pushed (retries included), and how many were pushed twice.
    pub sent_pushes: u64,
    pub sent_pushed_twice: u64,
}

/// Runs the third act.
pub(super) async fn run(
    deps: &Deps,
    topology: &Topology,
    orders: &OrdersApp,
    fake: &FakeHandle,
    events: SocketAddr,
    users: usize,
    fleet: &mut Fleet,
) -> anyhow::Result<Act> {
    let tap = ReceiptTap::open(deps, topology).await?;
    let result = act(deps, topology, orders, fake, events, users, fleet, &tap).await;
    tap.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn act(
    deps: &Deps,
    topology: &Topology,
    orders: &OrdersApp,
    fake: &FakeHandle,
    events: SocketAddr,
    users: usize,
    fleet: &mut Fleet,
    tap: &ReceiptTap,
) -> anyhow::Result<Act> {
    let app = &orders.id;
    let shoppers = shoppers(users.clamp(1, MAX_SHOPPERS));
    wait_listening(events, fleet).await?;
    let url = format!("http://{events}/wechat/{app}");
    let spec = |kind: PushKind, open_id: &str, items: Vec<PushItem>, i: usize| PushSpec {
        url: url.clone(),
        app_id: app.to_string(),
        token: orders.push_token.clone(),
        encoding_aes_key: Some(orders.aes_key.clone()),
        format: if i.is_multiple_of(2) {
            PushFormat::Json
        } else {
            PushFormat::Xml
        },
        kind,
        open_id: open_id.to_owned(),
        items,
        create_time: None,
        list_as_array: false,
        times: 1,
        same_nonce: false,
        timestamp_offset_secs: 0,
        sign_with: None,
    };
    let fake_err = |e: wxpush_fake_wechat::FakeError| anyhow!("fake WeChat: {e}");

    // The prompt: WeChat holds the consent a user accepts, and pushes the popup event.
    for (i, s) in shoppers.iter().enumerate() {
        let status = match s.popup {
            Popup::NeverAsked => continue,
            Popup::Declined => "reject",
            Popup::Accepted | Popup::AcceptedPushedTwice => {
                fake.grant_consents(Some(app.as_str()), &s.open_id, SUB_TEMPLATE, 1)
                    .map_err(fake_err)?;
                "accept"
            }
        };
        let item = PushItem {
            template_id: SUB_TEMPLATE.into(),
            status: Some(status.into()),
            ..PushItem::default()
        };
        let mut push = spec(PushKind::Popup, &s.open_id, vec![item], i);
        if s.popup == Popup::AcceptedPushedTwice {
            push.times = 2;
        }
        expect_success(&push, "popup").await?;
    }
    let mut consents = Vec::with_capacity(shoppers.len());
    for s in &shoppers {
        let open_id = OpenId::new(&s.open_id)?;
        consents.push(
            deps.bank
                .consents_left(app, &open_id, SUB_TEMPLATE)
                .await
                .context("Redis")?,
        );
    }
    eprintln!(
        "demo: act three: {} popup events pushed to wxpush events (secure mode), {} shoppers \
         accepted {SUB_TEMPLATE}",
        shoppers
            .iter()
            .map(|s| match s.popup {
                Popup::NeverAsked => 0,
                Popup::AcceptedPushedTwice => 2,
                _ => 1,
            })
            .sum::<u64>(),
        shoppers.iter().filter(|s| s.popup.accepted()).count()
    );

    // Orders ship in waves: one single message each, some published twice.
    let ch = deps.broker.channel().await?;
    topology.declare_send(&ch).await?;
    let _ = ch.close(200, "ok".into()).await;
    let publisher = Publisher::open(&deps.broker, topology.clone()).await?;
    let exchange = topology.messages_exchange();
    let started = Instant::now();
    let mut published = 0u64;
    let per_wave = shoppers.len().div_ceil(SHIPPING_WAVES).max(1);
    for (w, wave) in shoppers.chunks(per_wave).enumerate() {
        if w > 0 {
            tokio::time::sleep(WAVE_PAUSE).await;
        }
        for s in wave {
            let body = message(app, s).to_string();
            for _ in 0..if s.twice { 2 } else { 1 } {
                publisher
                    .publish(
                        &exchange,
                        "order.shipped",
                        body.as_bytes(),
                        Default::default(),
                    )
                    .await?;
                published += 1;
            }
        }
    }
    publisher.close().await;
    let shipped_in = started.elapsed();
    eprintln!(
        "demo: act three: published {published} order-shipped messages to {exchange} over {}",
        fmt_secs(shipped_in)
    );

    // Every message's outcome receipt.
    let mut receipts = Vec::new();
    let settled = |receipts: &[(String, serde_json::Value)]| {
        let mut with: HashMap<&str, ()> = HashMap::new();
        for (key, r) in receipts {
            if key != "message.delivered" && key != "message.delivery_failed" {
                if let Some(id) = r["messageId"].as_str() {
                    with.insert(id, ());
                }
            }
        }
        shoppers
            .iter()
            .filter(|s| with.contains_key(s.message_id.as_str()))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fleet.check_running()?;
        receipts.extend(tap.take().await?);
        if settled(&receipts) == shoppers.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "act three: {} of {} order messages have an outcome receipt after 60 s",
                settled(&receipts),
                shoppers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // WeChat reports each delivery it made; one push retried.
    let sends: Vec<RequestRecord> = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.endpoint == Endpoint::SubscribeSend && r.app_id.as_deref() == Some(app.as_str())
        })
        .collect();
    let (mut pushes, mut twice) = (0u64, 0u64);
    let mut delivered = 0u64;
    for (i, r) in sends.iter().enumerate() {
        let (Some(to), Some(msgid), true) = (r.touser.as_deref(), r.msgid, r.delivered) else {
            continue;
        };
        let item = PushItem {
            template_id: SUB_TEMPLATE.into(),
            msg_id: Some(msgid.to_string()),
            error_code: Some(0),
            ..PushItem::default()
        };
        let mut push = spec(PushKind::Sent, to, vec![item], i);
        if delivered % 10 == 3 {
            push.times = 2;
            twice += 1;
        }
        pushes += u64::from(push.times);
        delivered += 1;
        expect_success(&push, "sent").await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered_receipts = |r: &[(String, serde_json::Value)]| {
        r.iter().filter(|(k, _)| k == "message.delivered").count() as u64
    };
    loop {
        fleet.check_running()?;
        receipts.extend(tap.take().await?);
        if delivered_receipts(&receipts) >= delivered || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A receipt published twice, or one for a push WeChat retried, would come now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    receipts.extend(tap.take().await?);
    eprintln!(
        "demo: act three: {pushes} delivery events pushed for {delivered} messages WeChat \
         delivered; {} receipts collected",
        receipts.len()
    );
    Ok(Act {
        app: app.clone(),
        shoppers,
        consents,
        published,
        shipped_in,
        receipts,
        sends,
        sent_pushes: pushes,
        sent_pushed_twice: twice,
    })
}

/// The shoppers: 70% accept the prompt (10% more accept and WeChat pushes the event twice),
/// 10% decline, 10% are never asked; every fifth order's message is published twice.
fn shoppers(n: usize) -> Vec<Shopper> {
    let mut rng = Rng(random_u64());
    let run = random_u64() as u32;
    (0..n)
        .map(|i| {
            let popup = match rng.below(100) {
                0..=69 => Popup::Accepted,
                70..=79 => Popup::AcceptedPushedTwice,
                80..=89 => Popup::Declined,
                _ => Popup::NeverAsked,
            };
            let order = format!("DM{run:08x}-{:04}", 1001 + i);
            Shopper {
                open_id: format!("oOrd{i:08}{:016x}", u64::from(run) ^ i as u64),
                popup,
                message_id: format!("order-{order}-shipped"),
                order,
                twice: i % 5 == 2,
            }
        })
        .collect()
}

/// One order's message: the user's own order number, within `character_string`'s 32
/// characters and `thing`'s 20.
fn message(app: &AppId, s: &Shopper) -> serde_json::Value {
    json!({
        "messageId": s.message_id,
        "appId": app.as_str(),
        "openId": s.open_id,
        "kind": "subscribe",
        "templateId": SUB_TEMPLATE,
        "page": format!("pages/order/detail?id={}", s.order),
        "data": {"character_string1": {"value": s.order},
                 "thing2": {"value": "Shipped"}},
    })
}

/// Pushes `spec`; every answer must be WeChat's `success`.
async fn expect_success(spec: &PushSpec, what: &str) -> anyhow::Result<()> {
    let report = push_event(spec)
        .await
        .map_err(|e| anyhow!("fake WeChat could not push a {what} event: {e}"))?;
    for (status, body) in report.statuses.iter().zip(&report.bodies) {
        if *status != 200 {
            bail!(
                "wxpush events answered a {what} event with HTTP {status}: {}",
                wxpush_domain::short_reason(body)
            );
        }
    }
    Ok(())
}

/// Waits until `wxpush events` accepts connections (30 s at most).
async fn wait_listening(addr: SocketAddr, fleet: &mut Fleet) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        fleet.check_running()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("wxpush events is not listening on {addr} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Receipts by routing key: how many, and for how many messages (receipts are at least
/// once: one may come twice).
pub(super) fn by_key(receipts: &[(String, serde_json::Value)]) -> BTreeMap<String, (u64, u64)> {
    let mut seen: BTreeMap<String, (u64, HashSet<String>)> = BTreeMap::new();
    for (k, r) in receipts {
        let e = seen.entry(k.clone()).or_default();
        e.0 += 1;
        e.1.insert(r["messageId"].as_str().unwrap_or_default().to_owned());
    }
    seen.into_iter()
        .map(|(k, (n, ids))| (k, (n, ids.len() as u64)))
        .collect()
}

/// The demo's own queue on `<ns>.receipts` (every routing key; exclusive, auto-delete, and
/// deleted when the act ends).
struct ReceiptTap {
    ch: lapin::Channel,
    queue: String,
}

/// The tap's queue name (also deleted by the namespace's clean-up).
pub(super) fn tap_queue(ns: &str) -> String {
    format!("{ns}.demo.receipts")
}

impl ReceiptTap {
    async fn open(deps: &Deps, topology: &Topology) -> anyhow::Result<Self> {
        let ch = deps.broker.channel().await?;
        let exchange = topology.receipts_exchange();
        ch.exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .with_context(|| format!("cannot declare {exchange}"))?;
        let ns = exchange.trim_end_matches(".receipts");
        let queue = tap_queue(ns);
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .with_context(|| format!("cannot declare {queue}"))?;
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .with_context(|| format!("cannot bind {queue} to {exchange}"))?;
        Ok(Self { ch, queue })
    }

    /// Every receipt waiting: (routing key, receipt).
    async fn take(&self) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .with_context(|| format!("cannot read {}", self.queue))?
        {
            let body = serde_json::from_slice(&m.delivery.data)
                .unwrap_or_else(|_| json!({"unreadable": true}));
            out.push((m.delivery.routing_key.to_string(), body));
        }
        Ok(out)
    }

    async fn close(self) {
        let _ = self
            .ch
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.ch.close(200, "ok".into()).await;
    }
}
