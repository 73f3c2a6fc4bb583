#!/usr/bin/env bash
# The test command: every test of the workspace, against the real Redis and RabbitMQ
# (started first when they are not running, see scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo test --workspace --locked "$@"
