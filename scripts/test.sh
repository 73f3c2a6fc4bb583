#!/usr/bin/env bash
# The test command: every test of the workspace, against the real Redis and RabbitMQ
# (started first when they are not running, see scripts/services.sh), after `cargo fmt
# --check`, clippy with warnings as errors, and two offline checks of what ships: docker-compose.yml's rules (scripts/check-compose.sh, where Compose is
# installed) and the dependency policy in deny.toml (licences, bans, sources).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/check-compose.sh

# The dashboard's browser test (tests/e2e/dashboard.rs) drives headless Chromium through
# chromedriver: Debian's packages, installed when missing (as root or with sudo).
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  echo "test: installing chromium and chromium-driver for the dashboard's browser test" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y chromium chromium-driver >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium chromium-driver >/dev/null; }
  elif sudo -n true 2>/dev/null; then
    sudo apt-get install -y chromium chromium-driver >/dev/null || { sudo apt-get update >/dev/null && sudo apt-get install -y chromium chromium-driver >/dev/null; }
  else
    echo "test: chromium and chromium-driver are missing and cannot be installed here (no root or sudo): the dashboard's browser test will fail" >&2
  fi
fi

# cargo-deny, installed on first use. The version is pinned so that deny.toml's format stays
# the one it understands. Built unoptimised (`--debug`): 46 s instead of 2 min on a 2-core
# machine, and its check still takes under 2 s.
deny_series=0.20
if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny ${deny_series}\."; then
  echo "test: installing cargo-deny ${deny_series}.x (first run only: about a minute)" >&2
  cargo install --debug --locked cargo-deny --version "~${deny_series}"
fi
# The checks that need no network; the sources they read are fetched first. Duplicate
# versions are reported by `cargo deny check bans` but do not fail (deny.toml).
cargo fetch --locked
cargo deny --frozen --log-level error check --hide-inclusion-graph licenses bans sources

# The code as the project keeps it: formatted, and clippy-clean on every crate and target.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Test namespaces that killed runs left behind (their process gone) are deleted first, and
# what this run leaves is named and deleted after it (crates/testkit/src/sweep.rs): a broker
# that collects thousands of idle queues answers new connections ever more slowly. It needs
# rabbitmqctl (root) to list queues, and says so where it cannot; it never fails the run.
sweep() { cargo run -q --locked -p wxpush-testkit --bin wxpush-test-sweep -- "$@" || true; }
sweep
# Three tests at a time (libtest's default is one per core): most of the end-to-end tests'
# time is spent waiting (on leases, retries, WeChat's pauses), not computing; on a 2-core
# machine three take the stage from about 9 to about 6 minutes. RUST_TEST_THREADS overrides it.
status=0
RUST_TEST_THREADS=${RUST_TEST_THREADS:-3} cargo test --workspace --locked "$@" || status=$?
sweep --after
[ "$status" = 0 ] || exit "$status"

# On clusters (issue 13): scripts/cluster.sh brings up a 6-node Redis Cluster and a 3-node
# RabbitMQ cluster beside the single nodes; the campaign, ingest and fault suites run again
# with the roles pointed at them, and one test of each later suite (personalised campaigns,
# single messages, receipts, consent buckets, subscribe, the frequency cap and scheduled
# campaigns), the one whose scripts touch the most keys, so that a key outside its slot
# shows (whole suites took the run near 30 minutes on a slow day), and the demo (which
# stopped there on a pipeline across slots and left its keys on all but one node) (the test kit follows WXPUSH_REDIS_URL and WXPUSH_AMQP_URL),
# then the failover tests (a Redis primary frozen mid-campaign, with and without WAIT), then
# the script's own test, which ends by taking both clusters down. Its RabbitMQ nodes run as
# the rabbitmq user, so this part runs where root or passwordless sudo is at hand, and only
# in a whole run (no test name given).
if [ $# -eq 0 ]; then
  if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
    trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
    scripts/cluster.sh up
    (
      eval "$(scripts/cluster.sh env)"
      echo "test: on the clusters: WXPUSH_REDIS_URL=$WXPUSH_REDIS_URL WXPUSH_AMQP_URL=(3 nodes)" >&2
      cargo test --locked --test e2e -- campaign:: ingest:: faults:: \
        personal::a_campaign_in_parts_counts_every_part_and_reaches_each_user_once \
        single::lost_replies_and_a_killed_sender_still_send_each_message_once \
        receipts::every_outcome_has_its_receipt \
        consent_buckets::users_of_one_bucket_claiming_at_once_leave_exact_totals \
        subscribe::consents_accumulate_and_are_spent_one_per_message_and_per_template \
        cap::two_campaigns_racing_reach_each_user_once_under_a_cap_of_one \
        schedule::a_campaign_goes_out_at_its_time_and_not_before_across_a_dispatcher_restart \
        demo::the_demo_passes_its_checks_and_cleans_up
      cargo test --locked --test e2e -- --ignored --test-threads 1 --nocapture redis_cluster::
    )
    cargo test --locked --test e2e -- --ignored cluster_script::
    trap - EXIT
  else
    echo "test: the cluster suites and scripts/cluster.sh not tried: they need root or passwordless sudo" >&2
  fi
fi
