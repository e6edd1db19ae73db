# syntax=docker/dockerfile:1
# modelserve container image: the gateway, the models of models/ and ResNet50.
#
#   docker build -t modelserve .                                  CPU, ResNet50 ImageNet weights
#   docker build --build-arg VARIANT=gpu -t modelserve:gpu .      TensorFlow with CUDA
#   docker build --build-arg RESNET50=skip -t modelserve:small .  no ResNet50 (none: random weights)
#   docker run --rm --shm-size 1g -p 8500:8500 -p 8501:8501 modelserve [serve options]
#   docker run --rm --shm-size 1g --gpus all -p 8500:8500 -p 8501:8501 modelserve:gpu
#   (--shm-size: large gRPC messages reach their parsing helper in shared memory; docs/deploying.md)
#
# Settings are environment variables (MODELSERVE_*, see service/settings.py) or `serve` options
# appended to `docker run`. Move the REST port with MODELSERVE_PORT rather than --port, so the
# HEALTHCHECK below follows it.
#
# There is no Docker engine where this is developed, so no build step is written inline: the
# RUN steps call scripts/docker/*.sh (and scripts/install.sh), which scripts/check-docker.sh
# runs in a plain venv in CI, together with hadolint and a start of the server as here.
#
# Base image: pinned by tag only. A @sha256 digest can't be looked up or verified offline where
# this file is written; a release pipeline may pin one. The builder and the final stage must use
# the same image: the venv's python is a link to the base image's /usr/local/bin/python3.11.
# Both variants use python:3.11-slim: for VARIANT=gpu the CUDA libraries come as pip wheels
# (tensorflow[and-cuda]) inside the venv, so no CUDA base image is needed; the host needs the
# NVIDIA driver and the NVIDIA Container Toolkit (docker run --gpus, or Kubernetes' device
# plugin).

ARG VARIANT=cpu
ARG RESNET50=imagenet

# --- builder: the venv in /opt/venv (all downloads and build tools stay in this stage) -----
FROM python:3.11-slim AS builder
ARG VARIANT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY training/ training/
COPY scripts/ scripts/
# Non-editable install (the source tree is not in the final image), then for VARIANT=gpu the
# swap of tensorflow-cpu for tensorflow[and-cuda] of the same version.
RUN --mount=type=cache,target=/root/.cache/pip \
    scripts/docker/install-app.sh /opt/venv "$VARIANT"
ENV PATH=/opt/venv/bin:$PATH

# --- models: the repository's models plus ResNet50 per RESNET50 (imagenet | none | skip) ----
FROM builder AS models
ARG RESNET50
COPY models/ /srv/modelserve/models/
# Keras keeps the downloaded ImageNet weights in its cache, outside this stage's output.
RUN --mount=type=cache,target=/root/.keras \
    scripts/docker/export-models.sh /srv/modelserve/models "$RESNET50"

# --- final image: the venv, the models and the health check; no source, no build tools ------
FROM python:3.11-slim AS runtime
ARG VARIANT
ARG RESNET50
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="modelserve" \
      org.opencontainers.image.description="TensorFlow model-serving gateway: TF Serving REST and gRPC, Open Inference Protocol, task API (${VARIANT} build, resnet50: ${RESNET50})" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The user the server runs as: no login, no home of its own (HOME=/tmp below).
RUN groupadd --system --gid 10001 modelserve \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /tmp --no-create-home --shell /usr/sbin/nologin modelserve

# Owned by root and only readable by the user: the server never writes to its venv or models.
COPY --from=builder /opt/venv /opt/venv
COPY --from=models /srv/modelserve/models /srv/modelserve/models
COPY scripts/docker/healthcheck.py /opt/modelserve/healthcheck.py

# No thread-count variables: the server sizes its thread pools and TensorFlow's from the
# container's CPU limit itself at startup (it reads the cgroup CPU quota).
# HOME=/tmp: the one writable place the server (and Keras, TensorFlow) may need; with a
# read-only root file system, mount an emptyDir or tmpfs there.
# MODELSERVE_AUTO_EXPORT=0: the image ships its models (ResNet50 per RESNET50, or none); the
# server never downloads weights at start-up nor writes into its read-only repository.
ENV PATH=/opt/venv/bin:$PATH \
    MODELSERVE_MODEL_BASE_PATH=/srv/modelserve/models \
    MODELSERVE_AUTO_EXPORT=0 \
    MODELSERVE_HOST=0.0.0.0 \
    MODELSERVE_LOG_FORMAT=json \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /srv/modelserve

# gRPC (TF Serving's PredictionService and ModelService, grpc.health.v1) and REST.
EXPOSE 8500 8501

# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001

# For plain Docker (Kubernetes uses its own probes: /healthz and /readyz). Loading ResNet50 and
# warming up the models takes a while, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/modelserve/healthcheck.py"]

# On SIGTERM the server stops taking requests, lets those in flight finish
# (MODELSERVE_DRAIN_SECONDS) and exits 0; docker stop's default 10 s grace may cut that short.
STOPSIGNAL SIGTERM
ENTRYPOINT ["modelserve", "serve"]
