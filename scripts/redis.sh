#!/usr/bin/env bash
# Make a local Redis server available for the tests: install Debian's redis-server if missing (as root) and
# start one on a loopback port of its own, in the background. Prints the REDIS_URL on its last line.
# Exits 1 when Redis cannot be had (CI treats that as a failure; elsewhere the caller may skip).
set -euo pipefail
log() { echo "redis.sh: $*" >&2; }
port=${MPFEED_TEST_REDIS_PORT:-6390}

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then log "redis-server is not installed and we are not root"; exit 1; fi
  log "installing redis-server (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
fi

if ! redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
  log "starting redis-server on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --save "" --appendonly no \
    --logfile /tmp/mpfeed-test-redis.log >&2
  for _ in $(seq 1 50); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
    sleep 0.1
  done
fi
redis-cli -p "$port" ping | grep -q PONG || { log "redis-server did not answer on port $port"; exit 1; }
echo "redis://127.0.0.1:$port/0"
