#!/usr/bin/env bash
# The test command: every test of the workspace, against the real Redis and RabbitMQ
# (started first when they are not running, see scripts/services.sh), after `cargo fmt
# --check`, clippy with warnings as errors, and two offline checks of what ships: docker-compose.yml's rules (scripts/check-compose.sh, where Compose is
# installed) and the dependency policy in deny.toml (licences, bans, sources).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
scripts/check-compose.sh

# cargo-deny, installed on first use (a build of a few minutes). The version is pinned so
# that deny.toml's format stays the one it understands.
deny_series=0.20
if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny ${deny_series}\."; then
  echo "test: installing cargo-deny ${deny_series}.x (first run only: a few minutes)" >&2
  cargo install --locked cargo-deny --version "~${deny_series}"
fi
# The checks that need no network; the sources they read are fetched first. Duplicate
# versions are reported by `cargo deny check bans` but do not fail (deny.toml).
cargo fetch --locked
cargo deny --frozen --log-level error check --hide-inclusion-graph licenses bans sources

# The code as the project keeps it: formatted, and clippy-clean on every crate and target.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

cargo test --workspace --locked "$@"

# scripts/cluster.sh (local Redis and RabbitMQ clusters beside the single nodes): its RabbitMQ
# nodes run as the rabbitmq user, so its test runs where root or passwordless sudo is at hand,
# and only in a whole run (no test name given).
if [ $# -eq 0 ]; then
  if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
    cargo test --locked --test cluster_script -- --ignored
  else
    echo "test: scripts/cluster.sh not tried: it needs root or passwordless sudo" >&2
  fi
fi
