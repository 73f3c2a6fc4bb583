//! The bare sender ceiling the benchmarks compare wxpush's senders with: the same work
//! without wxpush's logic (consume + one Redis script + one HTTP POST + ack).

use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, QueueDeclareOptions, QueueDeleteOptions};
use serde_json::json;
use wxpush_broker::{JobConsumer, Publisher};
use wxpush_domain::{OpenId, SendJob};
use wxpush_fake_wechat::FakeHandle;
use wxpush_roles::Deps;

use crate::TestEnv;

/// Consumes one job per user from a bare queue, `concurrency` at a time (prefetch twice
/// that), each: ZPOPMIN of a formId the fake issued to the user, one template send to the
/// fake, ack. Returns sends/s. The queue and keys are the namespace's, removed after.
pub async fn bare_sender(
    env: &TestEnv,
    deps: &Deps,
    fake: &FakeHandle,
    secret: &str,
    template: &str,
    users: &[OpenId],
    concurrency: usize,
) -> f64 {
    let ns = env.ns.to_string();
    let queue = format!("{ns}.bench-bare-send");
    let ch = deps.broker.channel().await.expect("channel");
    // Of the install's queue type, as the send queue is.
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        env.topology().type_args(),
    )
    .await
    .expect("declare the bare queue");
    let conn = deps.bank.connection();
    let mut zadds = Vec::with_capacity(users.len());
    for u in users {
        let f = fake
            .issue_form_ids(None, u.as_str(), 1, None)
            .expect("issue a formId");
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(format!("{ns}:bare:{u}")).arg(1).arg(&f[0]);
        zadds.push(cmd);
    }
    // One pipeline on a single node, one per slot on a cluster.
    wxpush_redis::run_batch(&conn, zadds, None, &[])
        .await
        .expect("ZADD");
    let bodies: Vec<Vec<u8>> = users
        .iter()
        .map(|u| {
            let job: SendJob = serde_json::from_value(json!({
                "campaignId": "bare", "openId": u.as_str(), "templateId": template,
                "data": {"keyword1": "benchmark", "keyword2": "2026-11-28"}}))
            .expect("a job");
            job.to_json()
        })
        .collect();
    let publisher = Publisher::open(&deps.broker, env.topology())
        .await
        .expect("publisher");
    for chunk in bodies.chunks(2000) {
        publisher
            .publish_all("", chunk.iter().map(|b| (queue.as_str(), b.as_slice())))
            .await
            .expect("publish");
    }
    publisher.close().await;
    let client =
        wxpush_wechat::Client::new(&wxpush_wechat::ClientConfig::with_base_url(fake.base_url()))
            .expect("client");
    let token = client
        .fetch_token(&env.app, &wxpush_domain::Secret::new(secret))
        .await
        .expect("token")
        .token;
    let pop = redis::Script::new("return redis.call('ZPOPMIN', KEYS[1])");
    let prefetch = u16::try_from(concurrency * 2).unwrap_or(u16::MAX);
    let JobConsumer { channel, consumer } =
        JobConsumer::start(&deps.broker, &queue, prefetch, "bare")
            .await
            .expect("consumer");
    let start = Instant::now();
    consumer
        .take(users.len())
        .for_each_concurrent(concurrency, |d| {
            let (mut conn, client, token, pop, ns) = (conn.clone(), &client, &token, &pop, &ns);
            async move {
                let d = d.expect("delivery");
                let job: SendJob = serde_json::from_slice(&d.data).expect("job");
                let who = OpenId::new(&job.open_id).expect("openId");
                let popped: Vec<String> = pop
                    .key(format!("{ns}:bare:{who}"))
                    .invoke_async(&mut conn)
                    .await
                    .expect("ZPOPMIN");
                let msg = wxpush_wechat::TemplateMessage {
                    touser: who,
                    template_id: job.template_id,
                    page: None,
                    form_id: popped[0].clone(),
                    data: job.data,
                    emphasis_keyword: None,
                };
                assert!(client.send_template(token, &msg).await.is_sent());
                d.acker.ack(BasicAckOptions::default()).await.expect("ack");
            }
        })
        .await;
    let rate = users.len() as f64 / start.elapsed().as_secs_f64();
    let _ = channel.close(200, "ok".into()).await;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.close(200, "ok".into()).await;
    rate
}
