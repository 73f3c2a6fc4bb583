//! `amqps://` and `rediss://` end to end: the real `wxpush ingest` reaching the machine's
//! RabbitMQ and Redis through TLS-terminating proxies (`wxpush_testkit::tls`), and the one-line
//! errors when the server's certificate is not trusted or `WXPUSH_TLS_CA_FILE` cannot be used.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::json;
use wxpush_domain::OpenId;
use wxpush_testkit::tls::{loopback_upstream, via_proxy, TestCa, TlsProxy};
use wxpush_testkit::{amqp_url, eventually, form_id, now_ms, redis_url, TestEnv};

const DAY_MS: i64 = 86_400_000;

fn user(n: usize) -> String {
    format!("oTls{n:06}xxxxxxxxxxxxxxxxxxx")
}

/// One upload of `count` formIds for user `n`.
fn upload(n: usize, count: u64) -> Vec<u8> {
    let ids: Vec<_> = (0..count)
        .map(|i| json!({"formId": form_id(n as u64, i), "expire": now_ms() + DAY_MS}))
        .collect();
    json!({"openId": user(n), "formIds": ids})
        .to_string()
        .into_bytes()
}

/// Credentials stored for each of `users` (ZCARD of their keys), read on a plain connection.
async fn stored_counts(deps: &wxpush_roles::Deps, env: &TestEnv, users: usize) -> Vec<u64> {
    let mut pipe = redis::pipe();
    for n in 0..users {
        let open_id = OpenId::new(&user(n)).expect("test openId is valid");
        pipe.cmd("ZCARD")
            .arg(deps.bank.keys().credentials(&env.app, &open_id));
    }
    pipe.query_async(&mut deps.bank.connection())
        .await
        .expect("ZCARD")
}

/// A running `wxpush`, killed if the test ends (or fails) before stopping it.
struct Running(Option<Child>);

impl Running {
    fn spawn(env: &TestEnv, args: &[&str]) -> Self {
        Self(Some(env.spawn(args)))
    }

    fn has_exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Sends SIGTERM (unless it already exited) and waits: the exit status and stderr.
    fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.0.take().expect("a child");
        if matches!(child.try_wait(), Ok(None)) {
            let delivered = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !delivered {
                let _ = child.kill();
            }
        }
        output(child)
    }

    /// Waits (at most `limit`) for the process to exit by itself.
    async fn exit_within(mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        while !self.has_exited() {
            assert!(
                start.elapsed() < limit,
                "wxpush still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        output(self.0.take().expect("a child"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn output(child: Child) -> (ExitStatus, String) {
    let out = child.wait_with_output().expect("wait for wxpush");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `wxpush ingest`, which must fail: returns its one stderr line, after checking it is the
/// only one, with no panic or backtrace.
async fn failing_ingest(env: &TestEnv) -> String {
    let (status, stderr) = Running::spawn(env, &["ingest"])
        .exit_within(Duration::from_secs(60))
        .await;
    assert!(!status.success(), "ingest should have failed: {stderr}");
    assert_eq!(
        status.code(),
        Some(1),
        "an error exit, not a signal: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{bad:?} in: {stderr}");
    }
    lines[0].to_owned()
}

/// The server certificate was refused by the client: a handshake began, none completed. The
/// client may report the refusal before the proxy has read its alert, so the proxy's count
/// is awaited for a moment.
async fn assert_refused(proxy: &TlsProxy, line: &str) {
    let counted = tokio::time::Instant::now() + Duration::from_secs(5);
    while proxy.failed_handshakes() == 0 && tokio::time::Instant::now() < counted {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.failed_handshakes() >= 1, "no TLS attempt: {line}");
    assert_eq!(proxy.handshakes(), 0, "a handshake succeeded: {line}");
    assert!(
        line.to_lowercase().contains("certificate"),
        "the cause is the certificate: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_works_over_amqps_and_rediss_with_the_ca_file() {
    let mut env = TestEnv::new("tls_ingest");
    // Plain connections, for publishing uploads and reading what was stored.
    let deps = env.deps().await;
    let ca = TestCa::new("trusted");
    let mq = ca.proxy(loopback_upstream(&amqp_url())).await;
    let cache = ca.proxy(loopback_upstream(&redis_url())).await;
    env.set(
        "WXPUSH_AMQP_URL",
        &via_proxy(&amqp_url(), "amqps", mq.port()),
    )
    .set(
        "WXPUSH_REDIS_URL",
        &via_proxy(&redis_url(), "rediss", cache.port()),
    )
    .set("WXPUSH_TLS_CA_FILE", &ca.file_str());
    let mut child = Running::spawn(&env, &["ingest"]);

    // Connected over both TLS URLs once it has declared its topology (or failed: say why):
    // its dead-letter queue, declared after the ingest queue is bound (an upload published
    // before the binding is routed nowhere).
    let queue = env.topology().ingest_queue();
    let declared = env.topology().dead_queue("ingest");
    let start = Instant::now();
    while !matches!(deps.broker.queue_ready(&declared).await, Ok(Some(_))) {
        if child.has_exited() || start.elapsed() > Duration::from_secs(30) {
            let (status, stderr) = child.stop();
            panic!("ingest did not declare its queue ({status:?}): {stderr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let users = 60;
    let bodies: Vec<Vec<u8>> = (0..users).map(|n| upload(n, 3)).collect();
    env.publish_uploads(&deps.broker, &bodies).await;
    let stored = eventually(Duration::from_secs(30), || async {
        stored_counts(&deps, &env, users)
            .await
            .iter()
            .all(|&c| c == 3)
    })
    .await;
    let (status, stderr) = child.stop();
    assert!(
        stored,
        "every upload stored through rediss: {:?} {stderr}",
        stored_counts(&deps, &env, users).await
    );
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("ingest stopped"), "{stderr}");
    assert_eq!(env.queue_ready(&deps.broker, &queue).await, 0);
    // Both connections went through the proxies, over TLS.
    assert!(mq.handshakes() >= 1, "no TLS handshake on the AMQP proxy");
    assert!(
        cache.handshakes() >= 1,
        "no TLS handshake on the Redis proxy"
    );
    assert_eq!(mq.failed_handshakes() + cache.failed_handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_without_the_ca_file_fails_in_one_line_naming_the_url() {
    let mut env = TestEnv::new("tls_amqps_noca");
    let ca = TestCa::new("unknown");
    let mq = ca.proxy(loopback_upstream(&amqp_url())).await;
    // Redis stays plain; the password is made up (the handshake fails before any login).
    let url = format!("amqps://wxpush:s3cret-pw@localhost:{}/%2f", mq.port());
    env.set("WXPUSH_AMQP_URL", &url);
    let line = failing_ingest(&env).await;
    let expected = format!(
        "wxpush: cannot reach RabbitMQ at amqps://localhost:{}/%2f: ",
        mq.port()
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(!line.contains("s3cret-pw"), "{line}");
    assert_refused(&mq, &line).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_without_the_ca_file_fails_in_one_line_naming_the_url() {
    let mut env = TestEnv::new("tls_rediss_noca");
    let ca = TestCa::new("unknown");
    let cache = ca.proxy(loopback_upstream(&redis_url())).await;
    let url = format!("rediss://:s3cret-pw@localhost:{}/0", cache.port());
    env.set("WXPUSH_REDIS_URL", &url);
    let line = failing_ingest(&env).await;
    let expected = format!(
        "wxpush: cannot reach Redis at rediss://localhost:{}/0: ",
        cache.port()
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(!line.contains("s3cret-pw"), "{line}");
    assert_refused(&cache, &line).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_of_another_ca_is_not_trusted_for_amqps_or_rediss() {
    let server_ca = TestCa::new("server");
    let other_ca = TestCa::new("other");
    let mq = server_ca.proxy(loopback_upstream(&amqp_url())).await;
    let cache = server_ca.proxy(loopback_upstream(&redis_url())).await;

    // Redis is connected first: with it refused, RabbitMQ is not tried.
    let mut env = TestEnv::new("tls_other_ca_redis");
    env.set(
        "WXPUSH_REDIS_URL",
        &via_proxy(&redis_url(), "rediss", cache.port()),
    )
    .set(
        "WXPUSH_AMQP_URL",
        &via_proxy(&amqp_url(), "amqps", mq.port()),
    )
    .set("WXPUSH_TLS_CA_FILE", &other_ca.file_str());
    let line = failing_ingest(&env).await;
    assert!(
        line.starts_with("wxpush: cannot reach Redis at rediss://"),
        "{line}"
    );
    assert_refused(&cache, &line).await;
    assert_eq!(mq.failed_handshakes() + mq.handshakes(), 0, "{line}");

    // With Redis plain, RabbitMQ refuses the certificate too.
    let mut env = TestEnv::new("tls_other_ca_amqp");
    env.set(
        "WXPUSH_AMQP_URL",
        &via_proxy(&amqp_url(), "amqps", mq.port()),
    )
    .set("WXPUSH_TLS_CA_FILE", &other_ca.file_str());
    let line = failing_ingest(&env).await;
    assert!(
        line.starts_with("wxpush: cannot reach RabbitMQ at amqps://"),
        "{line}"
    );
    assert_refused(&mq, &line).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_ca_file_is_one_line_naming_the_variable_and_the_path() {
    let dir = std::env::temp_dir().join(format!("wxpush-test-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not-a-certificate.pem");
    std::fs::write(&not_pem, "hello\n").expect("write a file that is not PEM");
    let cases = [
        (missing.clone(), "cannot read it"),
        (dir.clone(), "cannot read it"),
        (not_pem.clone(), "it holds no PEM certificate"),
    ];
    let mut lines = Vec::new();
    for (path, reason) in &cases {
        let mut env = TestEnv::new("tls_bad_ca_file");
        env.set("WXPUSH_TLS_CA_FILE", &path.display().to_string());
        let line = failing_ingest(&env).await;
        let expected = format!(
            "wxpush: cannot use WXPUSH_TLS_CA_FILE {}: {reason}",
            path.display()
        );
        lines.push((line.starts_with(&expected), line, expected));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (ok, line, expected) in lines {
        assert!(ok, "{line:?} should start with {expected:?}");
    }
}
