#!/usr/bin/env bash
# Entry point of the offline image (the `offline` service of docker-compose.yml): build the demo
# bundle into $BUNDLE, unless a complete one (its manifest.json) is already there.
#   BUNDLE       where the bundle goes (the `bundle` volume)            default /data/bundle
#   WORK         scratch space: the catalog and the training run        default /data/work
#   DATA         a catalog folder to train on instead of the synthetic one (mount it yourself)
#   SYNTH_ARGS   extra arguments for `python -m offline synth`, e.g. "--items 500 --users 300"
#   arguments    passed on to `python -m offline pipeline`, e.g. --views movies
set -euo pipefail
BUNDLE=${BUNDLE:-/data/bundle}
WORK=${WORK:-/data/work}

if [ -f "$BUNDLE/manifest.json" ]; then
  echo "offline: a bundle is already at $BUNDLE (manifest.json found), nothing to build"
  exit 0
fi

if [ -z "${DATA:-}" ]; then
  DATA="$WORK/catalog"
  # shellcheck disable=SC2086  # SYNTH_ARGS is a list of options, split on purpose
  python -m offline synth --out "$DATA" ${SYNTH_ARGS:-}
fi
python -m offline pipeline --data "$DATA" --out "$WORK/run" "$@"

# manifest.json goes last: its presence is what marks the bundle in $BUNDLE as complete.
built="$WORK/run/bundle"
mkdir -p "$BUNDLE"
find "$built" -mindepth 1 -maxdepth 1 ! -name manifest.json -exec cp -R {} "$BUNDLE/" \;
cp "$built/manifest.json" "$BUNDLE/manifest.json"
echo "offline: bundle written to $BUNDLE"
