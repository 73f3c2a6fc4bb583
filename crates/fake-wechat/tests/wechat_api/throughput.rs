//! How fast the fake answers (it must not be the bottleneck of the sender benchmark). It
//! prints its figure and asserts only correctness; run with
//! `cargo test --release -p wxpush-fake-wechat -- --ignored throughput` (debug builds only
//! check that every send is accepted and recorded).

use std::time::Instant;

use tokio::task::JoinSet;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn throughput_of_template_sends() {
    const USERS: usize = 1_000;
    const PER_USER: usize = 30;
    const WORKERS: usize = 64;
    let (h, c, t) = ready().await;
    let mut jobs = Vec::with_capacity(USERS * PER_USER);
    for u in 0..USERS {
        let to = format!("oBench{u:05}");
        for f in h.issue_form_ids(None, &to, PER_USER, None).expect("issue") {
            jobs.push(template(&to, &f));
        }
    }
    let total = jobs.len();
    let chunks: Vec<Vec<_>> = jobs
        .chunks(total.div_ceil(WORKERS))
        .map(<[_]>::to_vec)
        .collect();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for chunk in chunks {
        let (c, token) = (c.clone(), t.token.clone());
        set.spawn(async move {
            let mut sent = 0usize;
            for m in &chunk {
                sent += usize::from(c.send_template(&token, m).await.is_sent());
            }
            sent
        });
    }
    let mut sent = 0;
    while let Some(r) = set.join_next().await {
        sent += r.expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    println!("{total} sends in {secs:.2} s: {rate:.0}/s (client and fake on the same 2 cores)");
    assert_eq!(sent, total);
    assert_eq!(h.stats().sends_accepted as usize, total);
}
