#!/usr/bin/env bash
# Make sure a Redis answers at 127.0.0.1:6379: start one if not, install redis-server if absent.
set -euo pipefail
ping_redis() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
  else
    (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}
if ping_redis; then echo "redis: answering at 127.0.0.1:6379"; exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: redis-server not found, installing it with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
echo "redis: starting redis-server on 127.0.0.1:6379"
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
for _ in $(seq 1 50); do ping_redis && { echo "redis: up"; exit 0; }; sleep 0.1; done
echo "redis: could not start a server at 127.0.0.1:6379" >&2; exit 1
