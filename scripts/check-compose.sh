#!/usr/bin/env bash
# Checks docker-compose.yml with a real Compose, offline (`config` needs no Docker engine):
# without WXPUSH_APP_ID, WXPUSH_APP_SECRET or WXPUSH_WECHAT_API_BASE it refuses, naming the
# one missing; with them, or with deploy/demo.env, it resolves, and the demo points the roles
# at the fake. Uses `docker compose` (v2) or `docker-compose`; where neither is installed it
# says so and exits 0 (tests/e2e/deploy_manifests.rs checks the file's text in any case).
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "check-compose: no docker compose or docker-compose here: skipped"
  exit 0
fi

# Nothing from this shell or a local .env may leak in: an empty env file, a clean environment.
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
clean=(env -u WXPUSH_APP_ID -u WXPUSH_APP_SECRET -u WXPUSH_WECHAT_API_BASE
  -u WXPUSH_MOCK_CONTROL_TOKEN -u WXPUSH_NAMESPACE -u WXPUSH_SEND_RATE
  -u COMPOSE_PROFILES -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME)
real=(WXPUSH_APP_ID=wxa1b2c3d4e5f6a7b8 WXPUSH_APP_SECRET=not-a-real-secret
  WXPUSH_WECHAT_API_BASE=https://api.weixin.qq.com)
fail() { echo "check-compose: $*" >&2; exit 1; }

# Each required variable, missing or empty, stops Compose with its own message.
declare -A says=([WXPUSH_APP_ID]="mini program's appid"
  [WXPUSH_APP_SECRET]="mini program's app secret"
  [WXPUSH_WECHAT_API_BASE]="set it to https://api.weixin.qq.com")
for var in "${!says[@]}"; do
  for how in unset empty; do
    vars=()
    for kv in "${real[@]}"; do [[ $kv == "$var="* ]] || vars+=("$kv"); done
    [[ $how == empty ]] && vars+=("$var=")
    if out=$("${clean[@]}" "${vars[@]}" "${compose[@]}" --env-file "$empty" config 2>&1); then
      fail "resolved with $var $how; it must refuse"
    fi
    grep -qF "${says[$var]}" <<<"$out" || fail "with $var $how, the error does not say so: $out"
  done
done

# For real: resolves, the senders get the real base, and the fake has no control token.
out=$("${clean[@]}" "${real[@]}" "${compose[@]}" --env-file "$empty" config) \
  || fail "does not resolve with the three variables set"
grep -q "WXPUSH_WECHAT_API_BASE: https://api.weixin.qq.com" <<<"$out" || fail "real base not used"

# The dry run: resolves from deploy/demo.env alone and points the roles at the fake.
out=$("${clean[@]}" "${compose[@]}" --env-file deploy/demo.env --profile demo config) \
  || fail "the demo does not resolve from deploy/demo.env"
grep -q "WXPUSH_WECHAT_API_BASE: http://mock-wechat:8089" <<<"$out" || fail "demo base is not the fake"
grep -q "WXPUSH_MOCK_CONTROL_TOKEN: demo-control-token" <<<"$out" || fail "demo fake has no token"

# Profiles: Compose v2 lists only the services of the active profiles (docker-compose 1.x
# lists every service here, so this part needs v2).
if [[ ${compose[0]} == docker && ${#compose[@]} == 2 ]]; then
  services=$("${clean[@]}" "${real[@]}" "${compose[@]}" --env-file "$empty" config --services)
  grep -qx mock-wechat <<<"$services" && fail "mock-wechat runs without the demo profile"
  services=$("${clean[@]}" "${compose[@]}" --env-file deploy/demo.env --profile demo config --services)
  grep -qx mock-wechat <<<"$services" || fail "mock-wechat missing from the demo profile"
fi
echo "check-compose: docker-compose.yml ok (${compose[*]})"
