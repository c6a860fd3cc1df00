#!/usr/bin/env bash
# Make sure a PostgreSQL answers at 127.0.0.1:5432 for the store tests (user postgres, no password):
# start the installed cluster if it is down; install the Debian package and create a cluster if there
# is none. A cluster this script creates trusts local TCP connections: it is for tests, not for data.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if command -v pg_isready >/dev/null 2>&1 && ready; then echo "postgres: answering at 127.0.0.1:5432"; exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: not installed, installing postgresql with apt-get"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# the cluster on port 5432, else the first one, else a new one of the newest installed version
cluster=$(pg_lsclusters --no-header | awk '$3 == 5432 {print $1, $2; exit}')
[ -n "$cluster" ] || cluster=$(pg_lsclusters --no-header | awk 'NR == 1 {print $1, $2}')
if [ -z "$cluster" ]; then
  major=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -1)
  echo "postgres: creating cluster $major/main on 127.0.0.1:5432"
  $SUDO pg_createcluster --port 5432 "$major" main -- --auth-local trust --auth-host trust >/dev/null
  cluster="$major main"
fi
read -r major name <<<"$cluster"
echo "postgres: starting cluster $major/$name"
$SUDO pg_ctlcluster "$major" "$name" start || true  # "already running" on another port is handled below
for _ in $(seq 1 100); do ready && { echo "postgres: up"; exit 0; }; sleep 0.1; done
echo "postgres: nothing answers at 127.0.0.1:5432 (cluster $major/$name: see pg_lsclusters and its log)" >&2
exit 1
