#!/usr/bin/env bash
# `make run`: the stack, a first model if none was ever promoted, then every service under honcho.
# Ctrl-C (or `make stop`) stops the services and then the stack; no process is left behind.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${MNISTREAM_DATA:-$ROOT/.data}"
WORKERS="${INFERENCE_WORKERS:-2}"
RESCORERS="${RESCORE_WORKERS:-1}"

# Ctrl-C while the stack starts or the first model trains: stop what has started, then leave.
trap 'echo "interrupted; stopping the stack..." >&2; infra/stack.sh down; exit 130' INT TERM
infra/stack.sh up
.venv/bin/history-service migrate
.venv/bin/mnistream bootstrap

port="${GATEWAY_PORT:-8000}"
cat >&2 <<MSG

  mnistream is starting: open http://127.0.0.1:$port
  inference workers: $WORKERS (metrics on ports 8300..), rescore workers: $RESCORERS (8400..)
  logs: this terminal (services), $DATA/logs (stack). Stop with Ctrl-C or \`make stop\`.

MSG
.venv/bin/honcho -f Procfile start -p 8100 \
  -c "gateway=1,history=1,inference=$WORKERS,rescore=$RESCORERS" &
honcho=$!
echo "$honcho" >"$DATA/run/honcho.pid"
# Ctrl-C or `make stop`: let honcho stop the services first, then stop the stack.
trap 'kill -TERM "$honcho" 2>/dev/null || true' INT TERM
wait "$honcho" || true
wait "$honcho" 2>/dev/null || true
rm -f "$DATA/run/honcho.pid"
echo "services stopped; stopping the stack..." >&2
infra/stack.sh down
