#!/usr/bin/env bash
# The GPU check (issue 17), run ON the CUDA machine (16 cores, CUDA 13 libraries from torch's wheels,
# no package registry); scripts/gpu_wheels.sh, run where PyPI answers, prepares what it installs.
#
#   bash scripts/gpu_check.sh receive build/gpu-wheels/part-NN   check one carried part and keep it in
#                                                                $GPU_CHECK_STORE (outside the working tree)
#   bash scripts/gpu_check.sh check [OPTIONS]                   (make gpu-check) rebuild the wheels from the
#                                                                parts, check their sha256, install them, run
#                                                                scripts/gpu_check.py run [OPTIONS], e.g.
#                                                                --bundle DIR, --sizes 100000, --seconds 2
#   bash scripts/gpu_check.sh assemble DIR                      only rebuild and check the wheels, into DIR
#
# The check exits non-zero, saying why, when ONNX Runtime or FAISS runs on the CPU instead of the GPU.
# Its log, table and the services' logs go to $OUT when that is set (else build/gpu-check/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STORE=$(realpath -m "${GPU_CHECK_STORE:-/var/tmp/cliper-gpu-check}")
PYTHON=${PYTHON:-python3}

die() { echo "gpu_check: $*" >&2; exit 1; }

# The parts LAYOUT names that have a piece not yet in the store, one per line.
missing_parts() {
    local part piece
    while read -r part piece; do
        [[ -f $STORE/pieces/$piece ]] || echo "$part"
    done <"$STORE/LAYOUT" | uniq
}

receive() {
    local part=${1%/} name missing total file
    name=$(basename "$part")
    for file in LAYOUT SHA256SUMS PIECES.sha256; do
        [[ -f $part/$file ]] || die "$part has no $file: not a part written by scripts/gpu_wheels.sh"
    done
    (cd "$part" && sha256sum --quiet --strict -c PIECES.sha256) || die "$name arrived damaged: carry it again"
    if [[ -f $STORE/SHA256SUMS ]] && ! cmp -s "$STORE/SHA256SUMS" "$part/SHA256SUMS"; then
        die "$name comes from another gpu_wheels.sh run than the parts in $STORE: rm -rf $STORE, then carry every part of one run"
    fi
    mkdir -p "$STORE/pieces"
    cp -- "$part"/*.piece-* "$STORE/pieces/"
    cp -- "$part/SHA256SUMS" "$part/LAYOUT" "$STORE/"
    total=$(cut -d' ' -f1 "$STORE/LAYOUT" | sort -u | wc -l)
    missing=$(missing_parts | paste -sd' ')
    echo "gpu_check: received $name; $((total - $(wc -w <<<"$missing"))) of $total parts here${missing:+; missing: $missing}"
    if [[ -n $missing && ${missing%% *} < $name ]]; then
        echo "gpu_check: parts before $name are missing: the machine was fresh (given back in between); carry them again" >&2
    fi
}

assemble() {
    local dest=$1 missing wheel
    [[ -f $STORE/LAYOUT ]] || die "no part received in $STORE: make the receive calls that scripts/gpu_wheels.sh printed"
    missing=$(missing_parts | paste -sd' ')
    [[ -z $missing ]] || die "parts missing in $STORE: $missing; carry each with: bash scripts/gpu_check.sh receive build/gpu-wheels/PART"
    mkdir -p "$dest"
    while read -r _ wheel; do
        cat -- "$STORE/pieces/$wheel".piece-* >"$dest/$wheel"
    done <"$STORE/SHA256SUMS"
    (cd "$dest" && sha256sum --quiet --strict -c "$STORE/SHA256SUMS") || die "a rebuilt wheel does not match its sha256 (above)"
    echo "gpu_check: $(wc -l <"$STORE/SHA256SUMS") wheels rebuilt in $dest, sha256 checked"
}

install_wheels() {  # into $STORE/site, once per set of wheels
    local stamp
    stamp=$STORE/site/.installed-$(assemble_id)
    if [[ -f $stamp ]]; then
        echo "gpu_check: wheels already installed in $STORE/site"
        return
    fi
    rm -rf "$STORE/site" "$STORE/wheels"
    assemble "$STORE/wheels"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --target "$STORE/site" "$STORE"/wheels/*.whl || die "pip could not install the wheels (above)"
    rm -rf "$STORE/wheels"
    touch "$stamp"
    echo "gpu_check: wheels installed in $STORE/site"
}

assemble_id() { sha256sum <"$STORE/SHA256SUMS" | cut -c1-16; }

check() {
    local logs=${OUT:-$ROOT/build/gpu-check} libs
    [[ -f $STORE/SHA256SUMS ]] || die "no wheels received in $STORE: make the receive calls that scripts/gpu_wheels.sh printed"
    install_wheels
    export PYTHONPATH=$STORE/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    # ONNX Runtime's CUDA provider and cuVS (under FAISS) load CUDA, cuDNN and NCCL by name: the
    # nvidia-* wheels' lib folders must be on the loader's path before the processes start.
    libs=$("$PYTHON" "$ROOT/scripts/gpu_check.py" cuda-lib-dirs) || die "could not list the CUDA library folders"
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    mkdir -p "$logs"
    cd "$ROOT"
    "$PYTHON" scripts/gpu_check.py run --out "$logs" --work "$STORE/work" "$@" 2>&1 | tee "$logs/gpu-check.log"
}

case ${1:-check} in
    receive) [[ $# -eq 2 ]] || die "usage: gpu_check.sh receive build/gpu-wheels/part-NN"; receive "$2" ;;
    assemble) [[ $# -eq 2 ]] || die "usage: gpu_check.sh assemble DIR"; assemble "$2" ;;
    check) shift $(($# > 0 ? 1 : 0)); check "$@" ;;
    *) die "usage: gpu_check.sh receive PART | check [OPTIONS] | assemble DIR" ;;
esac
