# syntax=docker/dockerfile:1
# The production image of moderation-worker: the `worker` package and its runtime dependencies
# from requirements-prod.lock in a virtualenv, nothing from the development tools, run as a
# non-root numeric user on a read-only root filesystem. `make image` builds it (docker or podman).

# Both images are build arguments, so a machine without registry access can build from local
# stand-ins (`make image-standin`). The runtime stage must use the same base as the build stage:
# the virtualenv points at the base image's python3.
ARG BASE_IMAGE=python:3.12-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
# Set UV_SYSTEM_CERTS=true only where outbound TLS is re-signed by a local CA (mount the host's CA
# bundle into the build as well); unset, uv trusts its own bundled roots.
ARG UV_SYSTEM_CERTS
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv
WORKDIR /src
RUN uv venv --python python3 /opt/venv
# Dependencies first, exactly as locked (hashes checked), so editing the code reuses this layer.
COPY requirements-prod.lock ./
RUN uv pip install --require-hashes --no-deps -r requirements-prod.lock
COPY pyproject.toml README.md ./
COPY worker ./worker
# A regular (not editable) install: the image needs no source tree beside the virtualenv.
RUN uv pip install --no-deps . \
    && /opt/venv/bin/python -c "import worker.cli, worker.app"

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="moderation-worker" \
      org.opencontainers.image.description="Moderates chat messages from Amazon SQS with Llama Guard and publishes verdicts to Amazon SNS." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# Bytecode was compiled at build time; nothing is written at run time, so the root filesystem
# can be mounted read-only (Python's temporary files, if any, go to /tmp).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
# Prometheus metrics, /healthz and /readyz (MODERATION_METRICS_PORT).
EXPOSE 9102
# Liveness from the worker's own health route; the port follows MODERATION_METRICS_PORT. To probe
# another path, change "/healthz" here (urlopen fails on any non-2xx answer, so exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MODERATION_METRICS_PORT', '9102') + '/healthz', timeout=4)"]
# The worker handles SIGTERM itself: it stops receiving, drains in-flight messages within
# MODERATION_DRAIN_TIMEOUT, releases the rest and exits 0. Give the runtime's stop timeout more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["moderation-worker"]
CMD ["run"]
