#!/usr/bin/env bash
# `make run`: the stack, a first model if none was ever promoted, then every service under honcho.
# Ctrl-C (or `make stop`) stops the services and then the stack; no process is left behind.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${MNISTREAM_DATA:-$ROOT/.data}"
WORKERS="${INFERENCE_WORKERS:-2}"
RESCORERS="${RESCORE_WORKERS:-1}"

infra/stack.sh up
.venv/bin/history-service migrate
.venv/bin/mnistream bootstrap

stopping() {
  trap - EXIT INT TERM
  rm -f "$DATA/run/honcho.pid"
  echo "stopping the stack..." >&2
  infra/stack.sh down
}
trap stopping EXIT INT TERM

port="${GATEWAY_PORT:-8000}"
cat >&2 <<MSG

  mnistream is starting: open http://127.0.0.1:$port
  inference workers: $WORKERS (metrics on ports 8300..), rescore workers: $RESCORERS (8400..)
  logs: this terminal (services), $DATA/logs (stack). Stop with Ctrl-C or \`make stop\`.

MSG
.venv/bin/honcho -f Procfile start -p 8100 \
  -c "gateway=1,history=1,inference=$WORKERS,rescore=$RESCORERS" &
echo $! >"$DATA/run/honcho.pid"
wait "$(cat "$DATA/run/honcho.pid")" || true
