#!/usr/bin/env bash
# `make demo`: synthetic catalog -> CLIP -> features -> CLIPER + FREEDOM (evaluate, then refit on every
# interaction) -> verified bundle -> service.
# Options (environment variables, all optional):
#   DATA=DIR             a catalog folder instead of the synthetic one (e.g. movielens100k_posters)
#   VIEWS=PRESET|FILE    its views (products, movies, or a YAML file)
#   CORPUS=DIR           caption corpus to train the stand-in CLIP on (default: DATA/corpus)
#   CORPUS_COLUMNS="a=b" view columns the corpus names differently (e.g. genres=genre), space-separated
#   CLIP_MODEL=NAME      open_clip architecture (e.g. ViT-B-32) and CLIP_PRETRAINED=TAG|FILE for real weights
#   DEMO_DIR=DIR         where everything goes (default build/demo)
#   SERVE=0              build and verify the bundle, but do not start the service
#   HOST, PORT           where the service listens (default 127.0.0.1:8000)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-build/demo}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
started=$(date +%s)

args=()
if [ -z "${DATA:-}" ]; then
  DATA="$DEMO_DIR/catalog"
  if [ ! -f "$DATA/items.csv" ]; then
    "$PY" -m offline synth --out "$DATA" --items "${DEMO_ITEMS:-1000}" --users "${DEMO_USERS:-600}" --corpus-items "${DEMO_CORPUS_ITEMS:-1000}"
  fi
fi
[ -n "${VIEWS:-}" ] && args+=(--views "$VIEWS")
[ -n "${CORPUS:-}" ] && args+=(--corpus "$CORPUS")
for pair in ${CORPUS_COLUMNS:-}; do args+=(--corpus-column "$pair"); done
[ -n "${CLIP_MODEL:-}" ] && args+=(--clip-model "$CLIP_MODEL")
[ -n "${CLIP_PRETRAINED:-}" ] && args+=(--clip-pretrained "$CLIP_PRETRAINED")

"$PY" -m offline pipeline --data "$DATA" --out "$DEMO_DIR/run" ${args[@]+"${args[@]}"}
echo "demo: bundle built and verified in $(( $(date +%s) - started )) s at $DEMO_DIR/run/bundle"

[ "${SERVE:-1}" = "0" ] && exit 0
user=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[0])" "$DEMO_DIR/run/bundle/user_ids.json")
cat <<MSG

The service is starting at http://$HOST:$PORT (API docs at http://$HOST:$PORT/docs). Try:

  curl -s http://$HOST:$PORT/health/ready
  curl -s 'http://$HOST:$PORT/users/$user/recommendations?k=10'
  curl -s -X POST http://$HOST:$PORT/items -F item_id=new-mug-1 -F title='Red striped mug' \\
       -F brand=Acme -F categories='Kitchen|Mugs' -F description='A red mug with white stripes' \\
       -F image=@$(ls "$DATA"/images/* | head -n 1)
  curl -s -X POST http://$HOST:$PORT/users/$user/interactions -H 'content-type: application/json' \\
       -d '{"item_ids": ["new-mug-1"]}'

Stop it with Ctrl-C.
MSG
CLIPER_DATA_DIR="$DEMO_DIR/service-data" exec "$PY" -m service --bundle "$DEMO_DIR/run/bundle" --host "$HOST" --port "$PORT"
