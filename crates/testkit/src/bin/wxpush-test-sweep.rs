//! `wxpush-test-sweep [--after | --state]`: deletes what killed test runs left on the local Redis and
//! RabbitMQ (the namespaces of test processes that no longer run, [`wxpush_testkit::sweep`])
//! and prints one line saying what. `scripts/test.sh` runs it before the suite and, with
//! `--after`, after it, where anything found was left by the suite itself: a leak to fix,
//! named in the line. It never fails the run: a service it cannot look at is reported.
//! `--state` only prints the services' state ([`wxpush_testkit::sweep::services_state`]),
//! as a test that cannot connect does.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--state") {
        println!("{}", wxpush_testkit::sweep::services_state());
        return;
    }
    let after = std::env::args().any(|a| a == "--after");
    let swept =
        wxpush_testkit::sweep::sweep(&wxpush_testkit::redis_url(), &wxpush_testkit::amqp_url())
            .await;
    let found = swept.queues + swept.exchanges + swept.keys;
    let what = format!(
        "{} queues, {} exchanges and {} keys of {} test namespaces whose process is gone",
        swept.queues,
        swept.exchanges,
        swept.keys,
        swept.namespaces.len()
    );
    if after && found > 0 {
        let names: Vec<&str> = swept
            .namespaces
            .iter()
            .map(String::as_str)
            .take(10)
            .collect();
        eprintln!(
            "sweep: the suite left {what}, deleted now (a clean-up to fix): {}",
            names.join(", ")
        );
    } else if found > 0 {
        eprintln!("sweep: deleted {what} (earlier runs that were killed)");
    } else if swept.skipped.is_empty() {
        eprintln!(
            "sweep: no test namespace {} on Redis and RabbitMQ",
            if after {
                "left by the suite"
            } else {
                "left by an earlier run"
            }
        );
    }
    for s in &swept.skipped {
        eprintln!("sweep: {s}");
    }
}
