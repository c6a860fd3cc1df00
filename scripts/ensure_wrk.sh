#!/usr/bin/env bash
# Make sure the load generator of the serving benchmark (wrk) is installed; apt-get it if not.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then exit 0; fi
echo "wrk: not found, installing it with apt-get"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
