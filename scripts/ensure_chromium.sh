#!/usr/bin/env bash
# Make sure the browser of the page's tests (tests/ui/) is at /usr/bin/chromium: Debian's chromium,
# installed with apt-get if absent (Playwright never downloads a browser here). When it cannot be
# installed this says why and exits 0: the browser tests then skip, naming the reason.
set -uo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "found at $CHROMIUM")"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "chromium: $CHROMIUM not found, and installing it needs root or sudo; the browser tests will skip"
    exit 0
  fi
  SUDO="sudo -n"
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: $CHROMIUM not found, and there is no apt-get to install it; the browser tests will skip"
  exit 0
fi
echo "chromium: not found, installing it with apt-get"
log=$(mktemp)
if $SUDO apt-get update -qq >"$log" 2>&1 \
  && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1 \
  && [ -x "$CHROMIUM" ]; then
  echo "chromium: installed, $("$CHROMIUM" --version 2>/dev/null)"
else
  echo "chromium: could not install it with apt-get; the browser tests will skip. apt-get said:"
  tail -n 5 "$log"
fi
rm -f "$log"
exit 0
