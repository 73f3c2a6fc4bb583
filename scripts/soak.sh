#!/usr/bin/env bash
# The long fault runs, outside CI, against the real Redis and RabbitMQ (scripts/services.sh),
# each for WXPUSH_SOAK_SECS seconds (default 600), release build:
#
#   scripts/soak.sh roles    a random role SIGKILLed and restarted every 0.3-1.5 s during one
#                            50,000-user campaign and a 20,000-upload stream, then the usual
#                            checks (nobody twice, everyone reachable once, no formId reused,
#                            no upload lost)
#   scripts/soak.sh senders  campaign after campaign to 2,000 formId and 2,000 prepayId users
#                            while senders are SIGKILLed, SIGSTOPped (up to 35 s, past the 20 s
#                            lease) and SIGCONTed, and the fake WeChat loses replies after
#                            delivering (5xx, resets, hangs), answers slowly, and has token and
#                            send outages; the check counts WeChat's deliveries per user per
#                            campaign: never two
#   scripts/soak.sh          both, one after the other
#
# Extra arguments go to the test binary. WXPUSH_SOAK_PROFILE=debug uses the debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export WXPUSH_SOAK_SECS="${WXPUSH_SOAK_SECS:-600}"
which="${1:-all}"
case "$which" in
  roles | senders | all) [ $# -gt 0 ] && shift ;;
  *) which=all ;;
esac
profile=(--release)
[ "${WXPUSH_SOAK_PROFILE:-release}" = debug ] && profile=()
run() {
  cargo test "${profile[@]}" --locked --test e2e "faults::$1" -- --ignored --exact --nocapture "${@:2}"
}
case "$which" in
  roles) run soak_roles_killed_at_random "$@" ;;
  senders) run soak_senders_stopped_killed_and_wechat_faulty "$@" ;;
  all)
    run soak_roles_killed_at_random "$@"
    run soak_senders_stopped_killed_and_wechat_faulty "$@"
    ;;
esac
