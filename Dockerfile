# syntax=docker/dockerfile:1.7
# The one image recipe of mnistream: every service, the CLI and the trainer, chosen by build args.
# Built from the repository root (docker compose does this), e.g.
#   docker build --build-arg PACKAGE=history-service --build-arg COMMAND="history-service serve" .
#   docker build --target gateway --build-arg PACKAGE=gateway --build-arg COMMAND=gateway .
# Multi-stage: uv installs only PACKAGE and its locked dependencies; the slim runtime stage copies
# that environment and runs as a non-root user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
# The workspace member to install (gateway, inference-worker, history-service, rescore-worker,
# mnistream-cli), its extras ("--extra train" for the trainer), and the onnxruntime flavour
# (onnxruntime-gpu for CUDA workers).
ARG PACKAGE
ARG EXTRAS=""
ARG ONNXRUNTIME=onnxruntime
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "${PACKAGE}" || { echo "set --build-arg PACKAGE=<workspace member>" >&2; exit 1; }; \
    uv sync --frozen --no-dev --no-default-groups --no-editable --package "${PACKAGE}" ${EXTRAS} \
 && if [ "${ONNXRUNTIME}" = "onnxruntime-gpu" ]; then \
      version="$(uv export --frozen --package "${PACKAGE}" --no-hashes | sed -n 's/^onnxruntime==//p')"; \
      uv pip uninstall onnxruntime && uv pip install "onnxruntime-gpu[cuda,cudnn]==${version}"; \
    fi

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG COMMAND="mnistream --help"
# /data holds what a one-shot container keeps in a volume (the trainer's MNIST copy).
RUN useradd --create-home --uid 10001 mnistream && mkdir -p /data/mnist && chown -R mnistream /data
WORKDIR /app
COPY --from=build --chown=mnistream:mnistream /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 MNISTREAM_COMMAND=${COMMAND}
USER mnistream
# Compose gives every service its command; a bare `docker run` runs the one built in.
CMD ["/bin/sh", "-c", "exec $MNISTREAM_COMMAND"]

# The gateway also serves the web client.
FROM runtime AS gateway
COPY --chown=mnistream:mnistream web /app/web
ENV WEB_DIR=/app/web

# Every other image (the default target).
FROM runtime AS service
