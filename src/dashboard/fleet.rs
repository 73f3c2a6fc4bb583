//! The dashboard's Fleet page: the queues (depth, consumers, and rates in and out when
//! RabbitMQ's management API is configured, `WXPUSH_RABBITMQ_MANAGEMENT_URL`), the
//! dead-letter queues (count, and by reason with a sample when the management API can peek),
//! each app's access-token age and quota pause, and the send rate used against each app's
//! `WXPUSH_SEND_RATE`.
//!
//! Without a management URL the queues are read by AMQP passive declares (messages ready and
//! consumers; no rates). Dead letters are never consumed: their reasons are the counts and
//! sample the roles keep in Redis as they dead-letter ([`wxpush_bank::Bank::dead_letter_counts`],
//! over the last 30 days, whatever has been drained since); with the management API, a
//! classic dead-letter queue is also peeked (`ackmode=ack_requeue_true`, at most [`PEEK`]
//! messages) for what it holds now by reason. A quorum one is not: a peek redelivers, which
//! raises each message's delivery count, and a delivery limit could end in dropping it.
//!
//! This module reads the token's times only (`f`, `e` of the fleet's token hash), never the
//! token; it must not write to Redis or RabbitMQ, and must not show the management URL's
//! password.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use wxpush_broker::Topology;
use wxpush_domain::Config;
use wxpush_roles::Deps;

/// Dead letters peeked at most per queue (management API only).
pub const PEEK: usize = 50;
/// A management API call gives up after this.
const MGMT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Fleet {
    management: Option<Management>,
}

struct Management {
    /// `http(s)://host:port` (no user, no path).
    base: String,
    user: String,
    pass: String,
    vhost: String,
    client: reqwest::Client,
    /// The last peek of each classic dead-letter queue, and when: a peek marks the messages
    /// redelivered, so it is made at most every [`PEEK_FRESH`], however many pages poll.
    peeked: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Value)>>,
}

/// How long a dead-letter queue's peek is shown before it is made again.
const PEEK_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

impl Fleet {
    pub fn new(config: &Config, url: Option<String>) -> Self {
        let management = url.and_then(|u| Management::parse(&u, config));
        Self { management }
    }

    /// Everything the Fleet page shows, as JSON.
    pub async fn read(&self, deps: &Deps, config: &Config) -> Value {
        let topology = Topology::for_config(config);
        let mut queues = Vec::new();
        let mut dead = Vec::new();
        let mgmt_queues = match &self.management {
            Some(m) => m.queues().await.map_err(|e| e.to_string()),
            None => Err("not configured (WXPUSH_RABBITMQ_MANAGEMENT_URL)".to_owned()),
        };
        for name in topology.all_queues() {
            let is_dead = name.starts_with(&topology.dead_queue(""));
            let (ready, consumers, rates, kind) = match &mgmt_queues {
                Ok(all) => match all.get(&name) {
                    Some(q) => (
                        q["messages"].as_u64().or(q["messages_ready"].as_u64()),
                        q["consumers"].as_u64(),
                        Some(json!({
                            "in_per_sec": q["message_stats"]["publish_details"]["rate"].as_f64().unwrap_or(0.0),
                            "out_per_sec": q["message_stats"]["ack_details"]["rate"].as_f64()
                                .or(q["message_stats"]["deliver_get_details"]["rate"].as_f64()).unwrap_or(0.0),
                        })),
                        q["type"].as_str().map(str::to_owned),
                    ),
                    None => continue,
                },
                Err(_) => match deps.broker.queue_counts(&name).await {
                    Ok(Some((r, c))) => (Some(u64::from(r)), Some(u64::from(c)), None, None),
                    _ => continue,
                },
            };
            let row = json!({
                "queue": name, "messages": ready, "consumers": consumers, "rates": rates,
                "type": kind,
            });
            if is_dead {
                let source = name
                    .strip_prefix(&topology.dead_queue(""))
                    .unwrap_or(&name)
                    .to_owned();
                let counted = match deps.bank.dead_letter_counts(&source).await {
                    Ok(c) => json!({
                        "by_reason": c.by_reason,
                        "since_ms": c.since_ms,
                        "sample": c.sample.iter()
                            .filter_map(|s| serde_json::from_str::<Value>(s).ok())
                            .collect::<Vec<_>>(),
                    }),
                    Err(e) => json!({"unavailable": e.to_string()}),
                };
                let peeked = match (&self.management, kind.as_deref(), ready) {
                    (_, _, Some(0)) => Value::Null,
                    (Some(m), Some("classic"), _) => match m.peek(&name).await {
                        Ok(v) => v,
                        Err(e) => json!({"unavailable": e}),
                    },
                    (Some(_), _, _) => {
                        json!({"unavailable": "not peeked: a quorum queue (a peek raises each dead letter's delivery count, which a delivery limit could end in dropping it)"})
                    }
                    (None, _, _) => Value::Null,
                };
                let mut row = row;
                if let Some(o) = row.as_object_mut() {
                    o.insert("reasons".into(), counted);
                    o.insert("peeked".into(), peeked);
                }
                dead.push(row);
            } else {
                queues.push(row);
            }
        }
        let mut apps = Vec::new();
        let keys = wxpush_fleet::Keys::new(config.namespace.clone());
        let now = deps.bank.now_ms().await.ok();
        for app in config.apps.iter() {
            let mut conn = deps.bank.connection();
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(keys.token(&app.id)).arg("f").arg("e");
            pipe.cmd("PTTL").arg(keys.pause(&app.id));
            type Read = ((Option<i64>, Option<i64>), i64);
            let read: Result<Read, _> = pipe.query_async(&mut conn).await;
            let (token, pause) = match read {
                Ok(((fetched, expires), pttl)) => (
                    json!({
                        "fetched_at_ms": fetched,
                        "age_secs": fetched.zip(now).map(|(f, n)| (n - f) / 1000),
                        "expires_at_ms": expires,
                    }),
                    json!({"paused": pttl > 0, "left_secs": (pttl > 0).then_some(pttl / 1000)}),
                ),
                Err(e) => (json!({"error": e.to_string()}), Value::Null),
            };
            apps.push(json!({
                "app": app.id.as_str(),
                "send_rate": app.send_rate,
                "token": token,
                "quota_pause": pause,
            }));
        }
        json!({
            "management_api": match (&self.management, &mgmt_queues) {
                (None, _) => json!("not configured"),
                (Some(_), Ok(_)) => json!("ok"),
                (Some(_), Err(e)) => json!(format!("unavailable: {e}")),
            },
            "queues": queues,
            "dead_letters": dead,
            "apps": apps,
        })
    }
}

impl Management {
    fn parse(url: &str, config: &Config) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let (userinfo, hostpath) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let host = hostpath.split('/').next()?;
        let (user, pass) = match userinfo.and_then(|u| u.split_once(':')) {
            Some((u, p)) => (decode(u), decode(p)),
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        // The vhost of the AMQP URL (its path), `/` by default.
        let amqp = config.amqp_url.expose();
        let vhost = amqp
            .split(',')
            .next()
            .and_then(|u| u.split_once("://"))
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(_, v)| decode(v.split('?').next().unwrap_or("")))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        // reqwest is built without a crypto provider of its own: ring, as in wxpush-wechat.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(MGMT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        Some(Self {
            base: format!("{scheme}://{host}"),
            user,
            pass,
            vhost,
            client,
            peeked: Default::default(),
        })
    }

    fn vhost_part(&self) -> String {
        percent_encoding::utf8_percent_encode(&self.vhost, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }

    /// Every queue of the vhost, by name.
    async fn queues(&self) -> Result<BTreeMap<String, Value>, String> {
        let url = format!("{}/api/queues/{}", self.base, self.vhost_part());
        let r = self
            .client
            .get(&url)
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the management API at {}: {}",
                    self.base,
                    e.without_url()
                )
            })?;
        if !r.status().is_success() {
            return Err(format!(
                "the management API at {} answered {}",
                self.base,
                r.status()
            ));
        }
        let body = r.bytes().await.map_err(|e| e.without_url().to_string())?;
        let list: Vec<Value> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(list
            .into_iter()
            .filter_map(|q| Some((q["name"].as_str()?.to_owned(), q)))
            .collect())
    }

    /// Up to [`PEEK`] dead letters of a classic queue, requeued where they were: counts by
    /// reason (`x-wxpush-reason-code`, else `x-wxpush-reason`, else RabbitMQ's `x-death`
    /// reason) and a sample of reasons and sources (no bodies: they may hold credentials).
    async fn peek(&self, queue: &str) -> Result<Value, String> {
        let fresh = self.peeked.lock().ok().and_then(|m| {
            m.get(queue)
                .filter(|(at, _)| at.elapsed() < PEEK_FRESH)
                .map(|(_, v)| v.clone())
        });
        if let Some(v) = fresh {
            return Ok(v);
        }
        let v = self.peek_now(queue).await?;
        if let Ok(mut m) = self.peeked.lock() {
            m.insert(queue.to_owned(), (std::time::Instant::now(), v.clone()));
        }
        Ok(v)
    }

    /// [`Management::peek`], made now.
    async fn peek_now(&self, queue: &str) -> Result<Value, String> {
        let url = format!(
            "{}/api/queues/{}/{}/get",
            self.base,
            self.vhost_part(),
            percent_encoding::utf8_percent_encode(queue, percent_encoding::NON_ALPHANUMERIC)
        );
        let body = json!({"count": PEEK, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 0});
        let r = self
            .client
            .post(&url)
            .basic_auth(&self.user, Some(&self.pass))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !r.status().is_success() {
            return Err(format!("the management API answered {}", r.status()));
        }
        let bytes = r.bytes().await.map_err(|e| e.without_url().to_string())?;
        let got: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        let mut sample = Vec::new();
        for m in &got {
            let h = &m["properties"]["headers"];
            let reason = h[wxpush_broker::publish::REASON_CODE_HEADER]
                .as_str()
                .or(h[wxpush_broker::publish::REASON_HEADER].as_str())
                .or(h["x-first-death-reason"].as_str())
                .unwrap_or("unknown")
                .to_owned();
            *by_reason.entry(reason.clone()).or_insert(0) += 1;
            if sample.len() < 5 {
                sample.push(json!({
                    "reason": reason,
                    "detail": h[wxpush_broker::publish::REASON_HEADER].as_str(),
                    "source": h[wxpush_broker::publish::SOURCE_QUEUE_HEADER].as_str(),
                    "routing_key": m["routing_key"],
                }));
            }
        }
        Ok(json!({"peeked": got.len(), "by_reason": by_reason, "sample": sample}))
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
