# syntax=docker/dockerfile:1
# The CLIPER API image: FastAPI + ONNX Runtime + FAISS + Redis client, no torch.
#   docker build -f docker/service.Dockerfile -t cliper-api:cpu .
#   docker build -f docker/service.Dockerfile --build-arg DEVICE=cuda -t cliper-api:cuda .
# DEVICE=cuda keeps one CUDA major, 13, end to end: the nvidia/cuda 13.2 + cuDNN 9 runtime base
# (whose libraries ONNX Runtime links), onnxruntime-gpu 1.31.1 (its PyPI wheel is built for
# CUDA 13 / cuDNN 9, the same version as the CPU image's onnxruntime) and faiss-gpu-cuvs 1.15.1
# (the same FAISS as the CPU image's faiss-cpu; it loads its own CUDA >= 13.2 wheels). No CUDA 12
# set matches: faiss-gpu-cu12 needs CUDA 12, and no PyPI onnxruntime-gpu 1.31 is built for it.
# The host needs an NVIDIA driver of the 580 series or newer and the NVIDIA Container Toolkit.
# The bundle is read from CLIPER_BUNDLE (a read-only volume in docker-compose.yml).
ARG DEVICE=cpu
ARG CUDA_IMAGE=nvidia/cuda:13.2.0-cudnn-runtime-ubuntu22.04

FROM python:3.11-slim-bookworm AS python-cpu

FROM ${CUDA_IMAGE} AS python-cuda
# Ubuntu 22.04 ships Python 3.11 in universe; apt pins would break on every security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python

# The stage picked by DEVICE (python-cpu or python-cuda), both tagged above.
# hadolint ignore=DL3006
FROM python-${DEVICE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM base AS builder
ARG DEVICE
# A recent pip: Ubuntu's venv pip (22.0) misreads the `==26.06.*` pins of faiss-gpu-cuvs' deps.
# hadolint ignore=DL3008
RUN if [ "$DEVICE" = cuda ]; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install pip==26.3
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cliper ./cliper
COPY offline ./offline
COPY service ./service
# The `gpu` extra replaces the CPU builds of the two packages that share its import names.
# Versions are pinned in pyproject.toml, not here.
# hadolint ignore=DL3013
RUN pip install ".[service]" \
    && if [ "$DEVICE" = cuda ]; then \
        pip uninstall -y onnxruntime faiss-cpu && pip install ".[gpu]"; \
    fi \
    && python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch must not be in the API image'" \
    && python -c "import importlib.metadata as m; print(sorted(d.name + '==' + d.version for d in m.distributions() if d.name.lower().startswith(('onnxruntime', 'faiss'))))"

FROM base AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/cliper cliper \
    && mkdir -p /data/bundle /data/service \
    && chown -R cliper:cliper /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    CLIPER_BUNDLE=/data/bundle \
    CLIPER_DATA_DIR=/data/service \
    CLIPER_HOST=0.0.0.0 \
    CLIPER_PORT=8000
USER 10001:10001
WORKDIR /home/cliper
EXPOSE 8000
# python, not curl: the slim base has no curl. urlopen raises (exit 1) on any non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('CLIPER_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "service"]
