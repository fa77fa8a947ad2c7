#!/usr/bin/env bash
# `make run`: the stack, a first model if none was ever promoted, then every service in the
# foreground (mnistream-system run). Ctrl-C or `make stop` stops the services, then the stack;
# `make stop` returns only once this script has finished, so no teardown overlaps a new start.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${MNISTREAM_DATA:-$ROOT/.data}"
mkdir -p "$DATA/run"
echo $$ >"$DATA/run/run.pid"
cleanup() { infra/stack.sh down || true; rm -f "$DATA/run/run.pid"; }

# Ctrl-C while the stack starts or the first model trains: stop what has started, then leave.
trap 'echo "interrupted; stopping the stack..." >&2; cleanup; exit 130' INT TERM
infra/stack.sh up
# With KAFKA_BROKERS=3 every service and command bootstraps from the three nodes.
export "$(infra/stack.sh env | grep '^KAFKA_BOOTSTRAP_SERVERS=')"
# With OBSERVABILITY=1 every service sends its spans to the stack's Jaeger.
while IFS= read -r setting; do export "$setting"; done < <(infra/stack.sh env | grep -E '^(OTEL_EXPORTER_OTLP_ENDPOINT|TRACE_URL)=')
.venv/bin/history-service migrate
.venv/bin/mnistream bootstrap

cat >&2 <<MSG

  mnistream is starting; its address is printed once every service is up.
  logs: this terminal (services; also $DATA/logs/services), $DATA/logs (stack).
  Stop with Ctrl-C or \`make stop\`.

MSG
.venv/bin/mnistream-system run &
services=$!
# Ctrl-C or `make stop`: the runner stops every service and exits; then the stack stops.
trap 'kill -TERM "$services" 2>/dev/null || true' INT TERM
wait "$services" || true
wait "$services" 2>/dev/null || true
echo "services stopped; stopping the stack..." >&2
trap - INT TERM
cleanup
