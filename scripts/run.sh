#!/usr/bin/env bash
# The main job, for now: the ingest role against the local Redis and RabbitMQ (started first
# when they are not running). Publish uploads to the `<namespace>.formids` exchange and watch
# them land in the credential bank. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
if [ -z "${WXPUSH_APP_ID:-}" ]; then
  export WXPUSH_APP_ID=wxdemo0000000000
  echo "run: WXPUSH_APP_ID not set; using $WXPUSH_APP_ID" >&2
fi
cargo build --release --locked --quiet
exec target/release/wxpush ingest "$@"
