#!/usr/bin/env bash
# Local clusters on this machine, for running wxpush past one node (issue 13): a 6-node Redis
# Cluster (3 primaries, 3 replicas) and a 3-node RabbitMQ cluster, beside the single-node
# services of scripts/services.sh (never instead of them: they are not touched), on ports of
# their own. From Debian's packages (installed when missing, as services.sh does).
#
#   scripts/cluster.sh up       start both; idempotent (what already runs is kept)
#   scripts/cluster.sh down     stop both and remove their data
#   scripts/cluster.sh status   one line per node: running or not
#   scripts/cluster.sh env      `export NAME=value` lines pointing wxpush's roles at the
#                               clusters, then `# rabbitmq node: <name>` (for `rabbitmqctl -n`):
#                               eval "$(scripts/cluster.sh env)"
#
# Ports: Redis 7000-7005 (cluster bus: +10000), RabbitMQ AMQP 5701-5703 (Erlang distribution:
# 25701-25703; nodes wxc1@localhost .. wxc3@localhost, clustered with wxc1). Data and logs
# under $WXPUSH_CLUSTER_DIR (default /tmp/wxpush-cluster). RabbitMQ nodes run as the
# `rabbitmq` user (its Erlang cookie is the one every node shares), so `up` and `down` need
# root or sudo, as installing the packages does.
#
# What `env` prints is how the roles are configured for clusters: several comma-separated
# URLs in WXPUSH_REDIS_URL (the Redis Cluster's seed nodes) and in WXPUSH_AMQP_URL (the
# broker's nodes); see docs/operations.md#redis-cluster and #quorum-queues.
set -euo pipefail

DIR=${WXPUSH_CLUSTER_DIR:-/tmp/wxpush-cluster}
REDIS_PORTS=(7000 7001 7002 7003 7004 7005)
RABBIT_NODES=(wxc1 wxc2 wxc3)
RABBIT_PORT_BASE=5700     # wxcN listens on 5700 + N
DIST_PORT_BASE=25700      # and distributes on 25700 + N
RABBIT_BIN=/usr/lib/rabbitmq/bin

say() { echo "cluster: $*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "needs root or sudo for: $*"; return 1
  fi
}
apt_install() { # package, command it provides
  command -v "$2" >/dev/null && return 0
  command -v apt-get >/dev/null || { say "$2 is missing and there is no apt-get: install $1"; return 1; }
  say "installing $1 from Debian's packages"
  as_root apt-get update -qq >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
answers() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# Runs a RabbitMQ command as the rabbitmq user, with node N's environment file and the
# open-file limit raised (su's login resets it to 1,024, at which RabbitMQ 3.x stops taking
# new connections past ~300 quorum queues: docs/operations.md#quorum-queues; as services.sh).
as_rabbit() { # node, command...
  local node=$1; shift
  as_root su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && \
    { ulimit -n 65536 2>/dev/null || ulimit -n \"\$(ulimit -Hn)\"; } && HOME=/var/lib/rabbitmq \
    RABBITMQ_CONF_ENV_FILE=$DIR/rabbit/$node/env.conf $*"
}
ctl() { as_root rabbitmqctl -q -n "$1@localhost" "${@:2}"; }

redis_up() {
  apt_install redis-server redis-server
  for p in "${REDIS_PORTS[@]}"; do
    local d=$DIR/redis/$p
    mkdir -p "$d"
    if ! redis-cli -p "$p" ping >/dev/null 2>&1; then
      redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 5000 --dir "$d" \
        --save "" --appendonly no --daemonize yes --pidfile "$d/redis.pid" \
        --logfile "$d/redis.log"
    fi
  done
  for p in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  if ! redis-cli -p 7000 cluster info | grep -q "cluster_known_nodes:6"; then
    local nodes=()
    for p in "${REDIS_PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  for _ in $(seq 100); do
    redis-cli -p 7000 cluster info | grep -q "cluster_state:ok" && return 0
    sleep 0.2
  done
  say "the Redis Cluster is not ok after 20 s:"; redis-cli -p 7000 cluster info >&2; return 1
}

rabbit_node_up() { # index 1..3
  local i=$1 node=${RABBIT_NODES[$(($1 - 1))]}
  local d=$DIR/rabbit/$node port=$((RABBIT_PORT_BASE + $1)) dist=$((DIST_PORT_BASE + $1))
  if answers "$port"; then return 0; fi
  mkdir -p "$d/mnesia" "$d/log"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$port
EOF
  : >"$d/enabled_plugins"
  # Debian's /etc/rabbitmq/rabbitmq-env.conf pins NODENAME: each node has its own file.
  cat >"$d/env.conf" <<EOF
NODENAME=$node@localhost
NODE_PORT=$port
DIST_PORT=$dist
MNESIA_BASE=$d/mnesia
LOG_BASE=$d/log
ENABLED_PLUGINS_FILE=$d/enabled_plugins
CONFIG_FILE=$d/rabbitmq.conf
ERL_EPMD_ADDRESS=127.0.0.1
EOF
  as_root chown -R rabbitmq:rabbitmq "$DIR/rabbit"
  as_rabbit "$node" "$RABBIT_BIN/rabbitmq-server -detached"
  for _ in $(seq 120); do
    ctl "$node" await_startup >/dev/null 2>&1 && answers "$port" && return 0
    sleep 0.5
  done
  say "RabbitMQ node $node did not start within 60 s (logs: $d/log)"; return 1
}

rabbit_up() {
  apt_install rabbitmq-server rabbitmq-server
  mkdir -p "$DIR/rabbit"
  chmod 755 "$DIR" "$DIR/rabbit"
  for i in 1 2 3; do rabbit_node_up "$i"; done
  for node in "${RABBIT_NODES[@]:1}"; do
    if ! ctl wxc1 cluster_status 2>/dev/null | grep -q "$node@localhost"; then
      # (Joining logs feature-flag warnings and "node not running" errors for the node
      # being reset: expected, kept in the node's log directory rather than on the terminal.)
      {
        ctl "$node" stop_app && ctl "$node" reset && ctl "$node" join_cluster wxc1@localhost &&
          ctl "$node" start_app
      } >>"$DIR/rabbit/$node/log/join.log" 2>&1 || {
        say "RabbitMQ node $node could not join wxc1 (see $DIR/rabbit/$node/log/join.log)"
        return 1
      }
    fi
  done
  ctl wxc1 await_online_nodes 3 >/dev/null
}

down() {
  for p in "${REDIS_PORTS[@]}"; do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
  for node in "${RABBIT_NODES[@]}"; do
    if [ -f "$DIR/rabbit/$node/env.conf" ]; then ctl "$node" stop >/dev/null 2>&1 || true; fi
  done
  # (Stopped nodes leave their ports within a second or two.)
  for _ in $(seq 40); do
    local busy=0
    for p in "${REDIS_PORTS[@]}" 5701 5702 5703; do answers "$p" && busy=1; done
    [ "$busy" = 0 ] && break
    sleep 0.25
  done
  as_root rm -rf "$DIR"
}

status() {
  for p in "${REDIS_PORTS[@]}"; do
    if redis-cli -p "$p" ping >/dev/null 2>&1; then
      echo "redis 127.0.0.1:$p $(redis-cli -p "$p" role | head -1) $(redis-cli -p "$p" cluster info | grep cluster_state | tr -d '\r')"
    else
      echo "redis 127.0.0.1:$p down"
    fi
  done
  for i in 1 2 3; do
    local node=${RABBIT_NODES[$((i - 1))]} port=$((RABBIT_PORT_BASE + i))
    if answers "$port"; then echo "rabbitmq $node@localhost 127.0.0.1:$port running"; else
      echo "rabbitmq $node@localhost 127.0.0.1:$port down"
    fi
  done
}

env_lines() {
  local redis="" amqp=""
  for p in 7000 7001 7002; do redis+="${redis:+,}redis://127.0.0.1:$p"; done
  for i in 1 2 3; do amqp+="${amqp:+,}amqp://guest:guest@127.0.0.1:$((RABBIT_PORT_BASE + i))/%2f"; done
  echo "export WXPUSH_REDIS_URL=$redis"
  echo "export WXPUSH_AMQP_URL=$amqp"
  echo "# rabbitmq node: ${RABBIT_NODES[0]}@localhost"
}

case "${1:-}" in
  up) redis_up && rabbit_up && say "up: Redis Cluster on 7000-7005, RabbitMQ cluster on 5701-5703" ;;
  down) down && say "down" ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: scripts/cluster.sh up|down|status|env" >&2; exit 2 ;;
esac
