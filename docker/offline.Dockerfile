# syntax=docker/dockerfile:1
# The CLIPER offline job image (torch, open_clip): builds a verified model bundle.
#   docker build -f docker/offline.Dockerfile -t cliper-offline:cpu .
#   docker build -f docker/offline.Dockerfile --build-arg DEVICE=cuda -t cliper-offline:cuda .
# DEVICE=cpu takes torch from the PyTorch CPU wheel index (no CUDA libraries, a far smaller
# image); DEVICE=cuda takes the PyPI torch wheel, which is built for CUDA 13 and carries its CUDA
# and cuDNN libraries as pip packages, so a plain Python base suffices (the NVIDIA Container
# Toolkit adds the driver). The entrypoint builds the demo bundle into $BUNDLE unless one is there.
ARG DEVICE=cpu

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM base AS builder
ARG DEVICE
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install pip==26.3
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cliper ./cliper
COPY offline ./offline
COPY service ./service
# Versions are pinned in pyproject.toml, not here.
# hadolint ignore=DL3013
RUN if [ "$DEVICE" = cpu ]; then export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu; fi \
    && pip install ".[offline]" \
    && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM base AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/cliper cliper \
    && mkdir -p /data/bundle /data/work \
    && chown -R cliper:cliper /data
COPY --from=builder /opt/venv /opt/venv
COPY docker/offline-entrypoint.sh /usr/local/bin/offline-entrypoint.sh
# HF_HUB_OFFLINE: the demo downloads nothing; unset it to fetch open_clip weights by pretrained tag.
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    BUNDLE=/data/bundle \
    WORK=/data/work
USER 10001:10001
WORKDIR /home/cliper
ENTRYPOINT ["/usr/local/bin/offline-entrypoint.sh"]
