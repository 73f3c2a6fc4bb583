#!/usr/bin/env bash
# The one-command showcase: makes sure Redis and RabbitMQ run (scripts/services.sh), builds
# wxpush, and runs `wxpush demo` (ingest, dispatch and senders against a fake WeChat, a formId
# campaign and a subscribe campaign to a generated population, a report with its checks).
# Arguments go to the demo,
# e.g. `scripts/demo.sh --users 50000 --senders 4`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --release --locked --quiet
exec "${CARGO_TARGET_DIR:-target}/release/wxpush" demo "$@"
