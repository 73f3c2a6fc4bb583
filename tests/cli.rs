//! The command line as an operator meets it: help, configuration errors and unreachable
//! dependencies, each one readable line and a non-zero exit, secrets never printed.

use wxpush_testkit::TestEnv;

fn run(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let out = env.command(args).output().expect("run wxpush");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_failure(code: i32, stderr: &str, expect: &str) {
    assert_ne!(code, 0);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("wxpush: "), "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

#[test]
fn help_lists_every_role_of_the_contract() {
    let env = TestEnv::new("cli_help");
    let out = env.command(&["--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "ingest",
        "dispatch",
        "send",
        "all",
        "campaign",
        "mock-wechat",
        "demo",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn a_missing_or_bad_variable_is_one_readable_line() {
    let mut env = TestEnv::new("cli_config");
    env.set("WXPUSH_APP_ID", "");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(code, &err, "WXPUSH_APP_ID is not set");

    let mut env = TestEnv::new("cli_config2");
    env.set("WXPUSH_USER_CAP", "lots");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        "WXPUSH_USER_CAP is invalid: 'lots' is not a whole number",
    );

    let mut env = TestEnv::new("cli_config3");
    env.set("WXPUSH_NAMESPACE", "bad:name");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(code, &err, "WXPUSH_NAMESPACE is invalid");
}

#[test]
fn unreachable_dependencies_are_named_without_their_passwords() {
    let mut env = TestEnv::new("cli_deps");
    env.set("WXPUSH_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(code, &err, "cannot reach Redis at redis://127.0.0.1:1/0");
    assert!(!err.contains("hunter2"));

    let mut env = TestEnv::new("cli_deps2");
    env.set("WXPUSH_AMQP_URL", "amqp://guest:hunter2@127.0.0.1:1/%2f");
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        "cannot reach RabbitMQ at amqp://127.0.0.1:1/%2f",
    );
    assert!(!err.contains("hunter2"));
}

#[test]
fn a_bad_apps_file_or_a_missing_secret_is_one_readable_line() {
    let mut env = TestEnv::new("cli_apps");
    let file = std::env::temp_dir().join(format!("{}.toml", env.ns));
    let path = file.to_string_lossy().into_owned();
    env.set("WXPUSH_CONFIG", &path);
    // Nothing is reachable: the configuration is what must be reported.
    env.set("WXPUSH_REDIS_URL", "redis://127.0.0.1:1/0");
    env.set("WXPUSH_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");

    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        &format!("WXPUSH_CONFIG is invalid: cannot read {path}"),
    );

    std::fs::write(
        &file,
        "[[apps]]\nappid = \"wxa\"\nsecret = \"s3cr3t-a\"\nsned_rate = 5\n",
    )
    .unwrap();
    let (code, err) = run(&env, &["dispatch"]);
    assert_one_line_failure(
        code,
        &err,
        "line 4, key sned_rate: unknown field `sned_rate`",
    );
    assert!(!err.contains("s3cr3t"), "{err}");

    // A value of the wrong type is not quoted back: it may be the secret itself.
    std::fs::write(
        &file,
        "[[apps]]\nappid = \"wxa\"\nsecret = 98765432109876\n",
    )
    .unwrap();
    let (code, err) = run(&env, &["ingest"]);
    assert_one_line_failure(
        code,
        &err,
        "line 3, key secret: invalid type: integer, expected a string",
    );
    assert!(!err.contains("98765432109876"), "{err}");

    // The variables' app (the default) has its secret; the file's second app has none.
    env.set("WXPUSH_APP_SECRET", "s3cr3t-default");
    std::fs::write(&file, "[[apps]]\nappid = \"wxfedcba0987654321\"\n").unwrap();
    let (code, err) = run(&env, &["send"]);
    assert_one_line_failure(code, &err, "no secret for app wxfedcba0987654321");
    assert!(!err.contains("s3cr3t"), "{err}");
    let _ = std::fs::remove_file(&file);
}
