#!/usr/bin/env bash
# Makes sure Redis and RabbitMQ answer before wxpush or its tests run.
#
# Checks the hosts and ports of WXPUSH_REDIS_URL and WXPUSH_AMQP_URL (default: the local
# ones). A local service that does not answer is started: from Debian's packages where apt
# works (installing them if needed), else with Docker Compose where an engine runs. When
# neither is possible it says what to do and exits 1. It never stops anything.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_url=${WXPUSH_REDIS_URL:-redis://127.0.0.1:6379/0}
amqp_url=${WXPUSH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

# host and port of a URL (userinfo and path stripped)
host_port() {
  local rest=${1#*://}; rest=${rest%%/*}; rest=${rest##*@}
  local host=${rest%:*} port=${rest##*:}
  [ "$host" = "$rest" ] && port=$2
  echo "$host" "$port"
}

answers() { timeout 1 bash -c "</dev/tcp/$1/$2" 2>/dev/null; }

is_local() { case "$1" in 127.*|localhost|::1|"[::1]") return 0;; *) return 1;; esac; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

docker_ok() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

apt_install() { # package, command it provides
  command -v "$2" >/dev/null && return 0
  command -v apt-get >/dev/null || return 1
  echo "services: installing $1 from Debian's packages" >&2
  as_root apt-get update -qq >/dev/null && \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

wait_for() { # name host port seconds
  local i
  for ((i = 0; i < $4 * 4; i++)); do answers "$2" "$3" && return 0; sleep 0.25; done
  echo "services: $1 did not start answering on $2:$3 within $4 s" >&2
  return 1
}

ensure() { # name host port start-with-packages compose-service
  local name=$1 host=$2 port=$3
  answers "$host" "$port" && return 0
  if ! is_local "$host"; then
    echo "services: $name at $host:$port does not answer, and it is not on this machine: start it there, or point the URL elsewhere" >&2
    return 1
  fi
  if $4; then
    wait_for "$name" "$host" "$port" 90 && return 0
  elif docker_ok; then
    echo "services: starting $name with Docker Compose" >&2
    # deploy/demo.env only fills the variables docker-compose.yml requires of the roles.
    docker compose --env-file deploy/demo.env up -d "$5" >/dev/null &&
      wait_for "$name" "$host" "$port" 90 && return 0
  fi
  cat >&2 <<MSG
services: $name is not running on $host:$port and could not be started here.
  Debian/Ubuntu: sudo apt-get install redis-server rabbitmq-server   (then run this script again)
  Docker:        docker compose --env-file deploy/demo.env up -d redis rabbitmq
  Elsewhere:     start $name yourself, or set WXPUSH_REDIS_URL / WXPUSH_AMQP_URL to a running one.
MSG
  return 1
}

start_redis() {
  apt_install redis-server redis-server || return 1
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null
}

start_rabbitmq() {
  apt_install rabbitmq-server rabbitmq-server || return 1
  echo "services: starting RabbitMQ (this takes a few seconds)" >&2
  # RabbitMQ 3.x counts three file handles per quorum queue and, past its open-file limit,
  # stops answering new connections: Debian's default of 1,024 is reached at ~300 queues
  # (docs/operations.md#quorum-queues). RabbitMQ recommends at least 50,000. Debian's
  # wrapper starts the broker through `su`, whose login resets the limit to 1,024: where
  # its layout is there, the broker is started as its own user with the limit raised.
  local raise='ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"'
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && id rabbitmq >/dev/null 2>&1; then
    as_root su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq && export HOME && { $raise; } && exec /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >/dev/null 2>&1 || true
  else
    as_root bash -c "$raise; exec rabbitmq-server -detached" >/dev/null 2>&1 || true
  fi
  # the port opens before the broker accepts logins; await_startup waits for that
  wait_for RabbitMQ "$amqp_host" "$amqp_port" 90 || return 1
  as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
}

read -r redis_host redis_port < <(host_port "$redis_url" 6379)
read -r amqp_host amqp_port < <(host_port "$amqp_url" 5672)

ensure Redis "$redis_host" "$redis_port" start_redis redis
ensure RabbitMQ "$amqp_host" "$amqp_port" start_rabbitmq rabbitmq
echo "services: Redis at $redis_host:$redis_port and RabbitMQ at $amqp_host:$amqp_port answer" >&2
