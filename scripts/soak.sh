#!/usr/bin/env bash
# The long fault run, outside CI: a random role SIGKILLed and restarted every 0.3-1.5 s for
# WXPUSH_SOAK_SECS seconds (default 600) during one 50,000-user campaign and a 20,000-upload
# stream, then the usual checks (nobody twice, everyone reachable once, no formId reused, no
# upload lost). Release build, against the real Redis and RabbitMQ (scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export WXPUSH_SOAK_SECS="${WXPUSH_SOAK_SECS:-600}"
exec cargo test --release --locked --test faults soak_roles_killed_at_random -- --ignored --nocapture "$@"
