# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= build/demo
DATA ?=
VIEWS ?=
CLIP_MODEL ?=
CLIP_PRETRAINED ?=

.PHONY: venv test demo bench-serve clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[offline,service,dev]'
	touch $(STAMP)

test: $(STAMP)
	bash scripts/ensure_redis.sh
	bash scripts/ensure_postgres.sh
	bash scripts/ensure_wrk.sh
	bash scripts/ensure_chromium.sh
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

demo: $(STAMP)
	HF_HUB_OFFLINE=1 bash scripts/demo.sh

bench-serve: $(STAMP)
	bash scripts/ensure_redis.sh
	bash scripts/ensure_wrk.sh
	$(PY) scripts/bench_serve.py

# On a CUDA machine, once `scripts/gpu_check.sh receive` has every part that `scripts/gpu_wheels.sh`
# made (README: GPU check); needs no .venv there.
.PHONY: gpu-check
gpu-check:
	bash scripts/gpu_check.sh check

clean:
	rm -rf build .pytest_cache
