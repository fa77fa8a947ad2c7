#!/usr/bin/env bash
# The local mnistream stack without Docker: Apache Kafka (KRaft), PostgreSQL, MinIO, MLflow.
#
#   infra/stack.sh up        provision what is missing (cached), start everything, wait until healthy
#   infra/stack.sh down      stop everything this script started; no process is left behind
#   infra/stack.sh status    one line per component: healthy / down, pid, port, memory, log file
#   infra/stack.sh env       the settings it would use (environment, then .env or $MNISTREAM_ENV_FILE)
#   infra/stack.sh stop|start NAME, kill kafka-N, kafka-leader   one component (fault tests)
#
# KAFKA_BROKERS=3 runs Kafka as a cluster of three KRaft nodes (each broker and controller) with
# topics replicated three times and min.insync.replicas 2; the default is one node.
#
# Every address comes from the same variables the services read (see .env.example), so the
# stack and the services cannot disagree. Data lives in $MNISTREAM_DATA (default .data/),
# logs in $MNISTREAM_DATA/logs/<component>.log, downloads and builds in $MNISTREAM_CACHE.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true  # `&` in a ${x//a/b} replacement stays `&`

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# .env fills in what the environment does not set (the environment wins, as in the services).
ENV_FILE="${MNISTREAM_ENV_FILE:-.env}"
if [[ -f "$ENV_FILE" ]]; then
  # KEY=value, optional quotes, an inline " # comment" dropped: what python-dotenv reads too.
  while IFS='=' read -r key value; do
    value="$(sed -E 's/[[:space:]]+#.*$//; s/^[[:space:]]+|[[:space:]]+$//g' <<<"$value")"
    value="${value#[\"\']}" && value="${value%[\"\']}"
    [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ && -z "${!key:-}" ]] && export "$key=$value"
  done < <(grep -E '^[A-Z_][A-Z0-9_]*=' "$ENV_FILE")
fi

DATA="${MNISTREAM_DATA:-$ROOT/.data}"
CACHE="${MNISTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mnistream}"
LOGS="$DATA/logs"
RUN="$DATA/run"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
# The MinIO server module is served by the Go proxy only as this pseudo-version (Feb 2026).
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
# Prometheus 3 as the Go module numbers it, built with file and DNS discovery only (remove_all_sd).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# Jaeger v2 (its query API and OTLP receiver; the web UI's assets are not in the Go module).
JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}"
# OBSERVABILITY=1 also runs Prometheus, scraping every service with alert rules (infra/prometheus),
# and Jaeger, which every service sends its spans to (infra/jaeger).
OBSERVABILITY="${OBSERVABILITY:-0}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
JAEGER_PORT="${JAEGER_PORT:-16686}"
JAEGER_GRPC_PORT="${JAEGER_GRPC_PORT:-16685}"
JAEGER_OTLP_PORT="${JAEGER_OTLP_PORT:-4318}"

KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# One broker (the light default) or a cluster of three KRaft nodes, each broker and controller.
KAFKA_BROKERS="${KAFKA_BROKERS:-1}"
# The operator's Kafka user: the one super user, which brokers also use between themselves.
# Each service gets a user of its own from `mnistream setup` (MNISTREAM_DATA/credentials/).
KAFKA_SASL_USERNAME="${KAFKA_SASL_USERNAME:-mnistream}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-mnistream-secret}"
DATABASE_URL="${DATABASE_URL:-postgresql+asyncpg://mnistream:mnistream@127.0.0.1:5432/mnistream}"
S3_ENDPOINT_URL="${S3_ENDPOINT_URL:-http://127.0.0.1:9000}"
S3_ACCESS_KEY_ID="${S3_ACCESS_KEY_ID:-mnistream}"
S3_SECRET_ACCESS_KEY="${S3_SECRET_ACCESS_KEY:-mnistream-secret}"
MINIO_CONSOLE_PORT="${MINIO_CONSOLE_PORT:-9001}"
MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-http://127.0.0.1:5000}"
ARTIFACTS_BUCKET="${ARTIFACTS_BUCKET:-mlflow}"
MLFLOW_DATABASE="${MLFLOW_DATABASE:-mlflow}"

# host:port pieces of the URLs above
url_port() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; echo "${rest##*:}"; }
url_host() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; echo "${rest%:*}"; }
KAFKA_PORT="$(url_port "PLAINTEXT://${KAFKA_BOOTSTRAP_SERVERS%%,*}")"
[[ "$KAFKA_BROKERS" == 1 || "$KAFKA_BROKERS" == 3 ]] || { echo "error: KAFKA_BROKERS is 1 or 3, not $KAFKA_BROKERS" >&2; exit 2; }
# They are written into the brokers' JAAS settings, between quotes.
[[ "$KAFKA_SASL_USERNAME" =~ ^[A-Za-z0-9._-]+$ && "$KAFKA_SASL_PASSWORD" =~ ^[A-Za-z0-9._~+-]{8,}$ ]] || {
  echo "error: KAFKA_SASL_USERNAME is letters, digits, . _ - and KAFKA_SASL_PASSWORD 8 or more of those or ~ +" >&2; exit 2; }
# Node n listens on the first bootstrap port + 2(n-1) and its controller on
# KAFKA_CONTROLLER_PORT + 2(n-1): 9092/9093, 9094/9095, 9096/9097 by default.
kafka_nodes() { seq 1 "$KAFKA_BROKERS"; }
kafka_name() { if ((KAFKA_BROKERS == 1)); then echo kafka; else echo "kafka-$1"; fi; }
kafka_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
kafka_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }
kafka_dir() { if ((KAFKA_BROKERS == 1)); then echo "$DATA/kafka"; else echo "$DATA/kafka-$1"; fi; }
if ((KAFKA_BROKERS > 1)); then
  # Clients bootstrap from every node, and topics get a replica on each (min.insync.replicas 2).
  KAFKA_BOOTSTRAP_SERVERS="$(for n in $(kafka_nodes); do printf '127.0.0.1:%s,' "$(kafka_port "$n")"; done)"
  KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS%,}"
  export KAFKA_BOOTSTRAP_SERVERS KAFKA_REPLICATION_FACTOR=3
fi
PG_HOST="$(url_host "$DATABASE_URL")"
PG_PORT="$(url_port "$DATABASE_URL")"
PG_USERINFO="${DATABASE_URL#*://}"; PG_USERINFO="${PG_USERINFO%%@*}"
PG_USER="${PG_USERINFO%%:*}"; PG_PASSWORD="${PG_USERINFO#*:}"
PG_DB="${DATABASE_URL##*/}"; PG_DB="${PG_DB%%\?*}"
MINIO_PORT="$(url_port "$S3_ENDPOINT_URL")"
MLFLOW_PORT="$(url_port "$MLFLOW_TRACKING_URI")"
MLFLOW_BACKEND="postgresql+psycopg2://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$MLFLOW_DATABASE"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name seconds command...
  local name="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -f "$RUN/$name.pid" ]] && ! kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
      say "$name exited during start; its log: $LOGS/$name.log"
      tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
      rm -f "$RUN/$name.pid"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      say "$name did not become healthy within ${secs}s; its log: $LOGS/$name.log"
      tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
}

pid_alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# Start a command in its own session so `down` can stop it and all its children at once.
spawn() { # name command...
  local name="$1"; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN/$name.pid"
}

stop_group() { # name
  local name="$1" pid
  [[ -f "$RUN/$name.pid" ]] || return 0
  pid="$(cat "$RUN/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
  say "stopped $name"
}

as_pg() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# ---------------------------------------------------------------- provisioning (cached)

pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do [[ -x "$dir/pg_ctl" ]] && { echo "$dir"; return; }; done
  return 1
}

ensure_postgres_installed() {
  pg_bin >/dev/null && return 0
  say "installing PostgreSQL from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

ensure_java() {
  command -v java >/dev/null || die "Java 17+ is needed for Kafka (apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "Maven is needed to resolve Kafka's jars (apt-get install maven)"
}

kafka_home() {
  if [[ -n "${KAFKA_HOME:-}" ]]; then echo "$KAFKA_HOME"; else echo "$CACHE/kafka-$KAFKA_VERSION"; fi
}

kafka_classpath() {
  local home; home="$(kafka_home)"
  if [[ -d "$home/libs" ]]; then echo "$home/libs/*"; else return 1; fi
}

ensure_kafka() {
  [[ -n "${KAFKA_HOME:-}" ]] && { [[ -d "$KAFKA_HOME/libs" ]] || die "KAFKA_HOME=$KAFKA_HOME has no libs/"; return 0; }
  local home; home="$(kafka_home)"
  [[ -f "$home/.complete" ]] && return 0
  ensure_java
  say "resolving Apache Kafka $KAFKA_VERSION from Maven Central (once; cached in $home)"
  rm -rf "$home"
  mvn -q -B -f infra/kafka/pom.xml -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$home/libs" >&2
  touch "$home/.complete"
}

minio_bin() { echo "${MINIO_BIN:-$CACHE/bin/minio}"; }

ensure_minio() {
  local bin; bin="$(minio_bin)"
  [[ -x "$bin" ]] && return 0
  [[ -n "${MINIO_BIN:-}" ]] && die "MINIO_BIN=$MINIO_BIN is not an executable"
  command -v go >/dev/null || die "Go is needed to build MinIO (or set MINIO_BIN)"
  say "building MinIO $MINIO_VERSION with go install (once, a few minutes; cached in $CACHE/bin)"
  mkdir -p "$CACHE/bin"
  GOBIN="$CACHE/bin" GOFLAGS=-trimpath go install "github.com/minio/minio@$MINIO_VERSION" >&2
}

prometheus_bin() { echo "$CACHE/bin/prometheus-$PROMETHEUS_VERSION"; }

ensure_prometheus() {
  [[ -x "$(prometheus_bin)" && -x "$CACHE/bin/promtool-$PROMETHEUS_VERSION" ]] && return 0
  command -v go >/dev/null || die "Go is needed to build Prometheus"
  say "building Prometheus $PROMETHEUS_VERSION and promtool with go install (once, several minutes; cached in $CACHE/bin)"
  local tmp; tmp="$(mktemp -d)"
  GOBIN="$tmp" GOFLAGS=-trimpath go install -tags remove_all_sd,enable_dns_sd \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
  mkdir -p "$CACHE/bin"
  mv "$tmp/promtool" "$CACHE/bin/promtool-$PROMETHEUS_VERSION"
  mv "$tmp/prometheus" "$(prometheus_bin)"
  rmdir "$tmp"
}

# ---------------------------------------------------------------- components

pg_managed() { [[ "$PG_HOST" == "127.0.0.1" || "$PG_HOST" == "localhost" ]] && [[ "${POSTGRES_EXTERNAL:-0}" != "1" ]]; }

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

up_postgres() {
  if ! pg_managed; then
    say "postgres: using the external server at $PG_HOST:$PG_PORT"
    wait_for postgres 30 pg_ready
    ensure_databases  # the application's and MLflow's, when the user may create them
    return
  fi
  ensure_postgres_installed
  local bin dir="$DATA/postgres"; bin="$(pg_bin)"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    say "postgres: initialising a cluster in $dir"
    mkdir -p "$dir"; chmod 700 "$dir"
    [[ $EUID -eq 0 ]] && chown postgres: "$dir"
    local pwfile; pwfile="$(mktemp)"; echo "$PG_PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
    as_pg "$bin/initdb" -D "$dir" -U "$PG_USER" --pwfile="$pwfile" -A scram-sha-256 -E UTF8 >>"$LOGS/postgres.log" 2>&1
    rm -f "$pwfile"
  fi
  if ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    if port_open "$PG_PORT"; then die "port $PG_PORT is taken by another server; set DATABASE_URL to another port or POSTGRES_EXTERNAL=1 to use it"; fi
    touch "$LOGS/postgres.log"; [[ $EUID -eq 0 ]] && chown postgres: "$LOGS/postgres.log"
    as_pg "$bin/pg_ctl" -D "$dir" -l "$LOGS/postgres.log" -w -t 60 start \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200 -c shared_buffers=128MB" >/dev/null
  fi
  wait_for postgres 60 pg_ready
  ensure_databases
}

psql_admin() { PGPASSWORD="$PG_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

ensure_databases() {
  local db
  for db in "$PG_DB" "$MLFLOW_DATABASE"; do
    if [[ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
      psql_admin -c "CREATE DATABASE \"$db\"" && say "postgres: created database $db"
    fi
  done
}

down_postgres() {
  pg_managed || return 0
  local bin dir="$DATA/postgres"; bin="$(pg_bin)" || return 0
  [[ -f "$dir/PG_VERSION" ]] || return 0
  if as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null && say "stopped postgres"
  fi
}

minio_ready() { curl -fsS "http://127.0.0.1:$MINIO_PORT/minio/health/live"; }

up_minio() {
  pid_alive minio && { wait_for minio 30 minio_ready; return; }
  ensure_minio
  port_open "$MINIO_PORT" && die "port $MINIO_PORT is taken; set S3_ENDPOINT_URL to another port"
  mkdir -p "$DATA/minio"
  MINIO_ROOT_USER="$S3_ACCESS_KEY_ID" MINIO_ROOT_PASSWORD="$S3_SECRET_ACCESS_KEY" \
    MINIO_BROWSER_REDIRECT=off MINIO_UPDATE=off \
    spawn minio "$(minio_bin)" server "$DATA/minio" --quiet \
    --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT"
  wait_for minio 60 minio_ready
}

kafka_ready() { # [node]
  local n="${1:-1}" name; name="$(kafka_name "$n")"
  # The log since this node's last start; grep reads it all (-q would end the pipe early, and
  # under pipefail sed's SIGPIPE would make a started node look down).
  port_open "$(kafka_port "$n")" && sed -n '/^--- start/h; /^--- start/!H; ${x;p}' "$LOGS/$name.log" | grep "Kafka Server started" >/dev/null
}

kafka_cluster_id() { # one id for every node of the stack, made once
  local file="$DATA/kafka-cluster-id" cp
  if [[ ! -f "$file" ]]; then
    cp="$(kafka_classpath)"
    java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null >"$file"
  fi
  cat "$file"
}

up_kafka() { # every node, or node N
  local n
  ensure_kafka; ensure_java
  for n in ${1:-$(kafka_nodes)}; do start_kafka_node "$n"; done
  for n in ${1:-$(kafka_nodes)}; do wait_for "$(kafka_name "$n")" 90 kafka_ready "$n"; done
}

start_kafka_node() { # node
  local n="$1" name port dir cp voters="" m rf=1 min_isr=1
  name="$(kafka_name "$n")"; port="$(kafka_port "$n")"; dir="$(kafka_dir "$n")"
  pid_alive "$name" && return 0
  port_open "$port" && die "port $port is taken; set KAFKA_BOOTSTRAP_SERVERS to another port"
  cp="$(kafka_classpath)"
  for m in $(kafka_nodes); do voters+="$m@127.0.0.1:$(kafka_controller_port "$m"),"; done
  ((KAFKA_BROKERS > 1)) && rf=3 min_isr=2
  mkdir -p "$dir"
  # Filled in by bash, not sed: the operator's password stays out of every process's argv, and
  # the file holding it is never readable by others, not even for a moment.
  local props; props="$(<infra/kafka/server.properties)"
  props="${props//@NODE_ID@/$n}"; props="${props//@VOTERS@/${voters%,}}"
  props="${props//@PORT@/$port}"; props="${props//@CONTROLLER_PORT@/$(kafka_controller_port "$n")}"
  props="${props//@LOG_DIRS@/$dir/logs}"; props="${props//@RF@/$rf}"; props="${props//@MIN_ISR@/$min_isr}"
  props="${props//@ADMIN_USER@/$KAFKA_SASL_USERNAME}"; props="${props//@ADMIN_PASSWORD@/$KAFKA_SASL_PASSWORD}"
  (umask 077 && printf '%s\n' "$props" >"$dir/server.properties.new")
  mv "$dir/server.properties.new" "$dir/server.properties"
  if [[ ! -f "$dir/logs/meta.properties" ]]; then
    say "$name: formatting KRaft storage in $dir/logs"
    java -cp "$cp" -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.yaml" kafka.tools.StorageTool \
      format -t "$(kafka_cluster_id)" -c "$dir/server.properties" >>"$LOGS/$name.log" 2>&1
  fi
  echo "--- start $(date -Is)" >>"$LOGS/$name.log"
  # A cluster's three JVMs get a smaller heap each than the one broker.
  local heap="-Xms256m -Xmx768m"; ((KAFKA_BROKERS > 1)) && heap="-Xms128m -Xmx384m"
  spawn "$name" java ${KAFKA_HEAP_OPTS:-$heap} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.yaml" -cp "$cp" kafka.Kafka "$dir/server.properties"
}

down_kafka() { # every node, or node N
  local n
  for n in ${1:-$(kafka_nodes)}; do stop_group "$(kafka_name "$n")"; done
}

mlflow_ready() { curl -fsS "http://127.0.0.1:$MLFLOW_PORT/health"; }

up_mlflow() {
  pid_alive mlflow && { wait_for mlflow 60 mlflow_ready; return; }
  port_open "$MLFLOW_PORT" && die "port $MLFLOW_PORT is taken; set MLFLOW_TRACKING_URI to another port"
  [[ -x .venv/bin/mlflow ]] || die "MLflow is not installed; run 'make install' first"
  MLFLOW_S3_ENDPOINT_URL="$S3_ENDPOINT_URL" AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY_ID" \
    AWS_SECRET_ACCESS_KEY="$S3_SECRET_ACCESS_KEY" AWS_DEFAULT_REGION=us-east-1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    spawn mlflow .venv/bin/mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" \
    --backend-store-uri "$MLFLOW_BACKEND" --serve-artifacts \
    --artifacts-destination "s3://$ARTIFACTS_BUCKET" --workers 1
  wait_for mlflow 120 mlflow_ready
}

jaeger_bin() { echo "$CACHE/bin/jaeger-$JAEGER_VERSION"; }

ensure_jaeger() {
  [[ -x "$(jaeger_bin)" ]] && return 0
  command -v go >/dev/null || die "Go is needed to build Jaeger"
  say "building Jaeger $JAEGER_VERSION (once, several minutes; cached in $CACHE/bin)"
  # Its module replaces dependencies, so `go install module@version` refuses it: build it as a
  # tool of a throwaway module instead.
  local tmp; tmp="$(mktemp -d)"
  (
    cd "$tmp" && go mod init jaeger-build >/dev/null 2>&1 &&
      go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2 &&
      GOFLAGS=-trimpath go build -o "$tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2
  ) || { rm -rf "$tmp"; die "building Jaeger failed"; }
  mkdir -p "$CACHE/bin"
  mv "$tmp/jaeger" "$(jaeger_bin)"
  rm -rf "$tmp"
}

jaeger_ready() { curl -fsS "http://127.0.0.1:$JAEGER_PORT/api/services"; }

up_jaeger() {
  pid_alive jaeger && { wait_for jaeger 30 jaeger_ready; return; }
  ensure_jaeger
  local port
  for port in "$JAEGER_PORT" "$JAEGER_GRPC_PORT" "$JAEGER_OTLP_PORT"; do
    port_open "$port" && die "port $port is taken; set JAEGER_PORT, JAEGER_GRPC_PORT or JAEGER_OTLP_PORT"
  done
  export JAEGER_PORT JAEGER_GRPC_PORT JAEGER_OTLP_PORT  # the config reads them
  spawn jaeger "$(jaeger_bin)" --config "$ROOT/infra/jaeger/config.yaml"
  wait_for jaeger 60 jaeger_ready
}

prometheus_ready() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"; }

up_prometheus() {
  local dir="$DATA/prometheus"
  mkdir -p "$dir/targets"
  # The rules and scrape settings of the repository, every start (targets/ is the systems').
  cp "$ROOT/infra/prometheus/prometheus.yml" "$ROOT/infra/prometheus/alerts.yml" "$dir/"
  if pid_alive prometheus; then
    curl -fsS -X POST "http://127.0.0.1:$PROMETHEUS_PORT/-/reload" >/dev/null 2>&1 || true
    wait_for prometheus 30 prometheus_ready; return
  fi
  ensure_prometheus
  port_open "$PROMETHEUS_PORT" && die "port $PROMETHEUS_PORT is taken; set PROMETHEUS_PORT to another port"
  spawn prometheus "$(prometheus_bin)" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/data" --storage.tsdb.retention.time=7d \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle
  wait_for prometheus 60 prometheus_ready
}

# ---------------------------------------------------------------- commands

cmd_up() {
  mkdir -p "$DATA" "$LOGS" "$RUN"
  local t0=$SECONDS
  up_postgres; say "postgres  healthy on $PG_HOST:$PG_PORT"
  up_minio;    say "minio     healthy on 127.0.0.1:$MINIO_PORT (console :$MINIO_CONSOLE_PORT)"
  up_kafka;    say "kafka     healthy on $KAFKA_BOOTSTRAP_SERVERS (KRaft, $KAFKA_BROKERS node(s), controller :$KAFKA_CONTROLLER_PORT)"
  .venv/bin/mnistream setup >&2   # topics and buckets, idempotent
  up_mlflow;   say "mlflow    healthy on $MLFLOW_TRACKING_URI"
  if [[ "$OBSERVABILITY" == 1 ]]; then
    up_prometheus; say "prometheus healthy on http://127.0.0.1:$PROMETHEUS_PORT (alerts: /api/v1/alerts; the API only: its web UI is not built here)"
    up_jaeger;     say "jaeger    healthy on http://127.0.0.1:$JAEGER_PORT (traces: /api/traces/ID; spans in on :$JAEGER_OTLP_PORT; the API only, like Prometheus)"
  fi
  say "stack up in $((SECONDS - t0))s; logs in $LOGS"
}

cmd_down() {
  stop_group jaeger
  stop_group prometheus
  stop_group mlflow
  down_kafka
  stop_group minio
  down_postgres
}

rss_mb() { # pid -> resident MB of the process and its children
  local total=0 p
  for p in $(pgrep -g "$(ps -o pgid= -p "$1" | tr -d ' ')" 2>/dev/null || echo "$1"); do
    total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $((total / 1024))
}

status_line() { # name ready-fn port pid
  local name="$1" fn="$2" port="$3" pid="${4:-}" mem="-" state="down"
  $fn >/dev/null 2>&1 && state="healthy"  # a function and its arguments
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && mem="$(rss_mb "$pid") MB"
  printf '%-9s %-8s port %-6s pid %-8s rss %-8s log %s\n' "$name" "$state" "$port" "${pid:--}" "$mem" "$LOGS/$name.log"
  [[ "$state" == "healthy" ]]
}

cmd_status() {
  local ok=0 pgpid=""
  [[ -f "$DATA/postgres/postmaster.pid" ]] && pgpid="$(head -1 "$DATA/postgres/postmaster.pid")"
  status_line postgres pg_ready "$PG_PORT" "$pgpid" || ok=1
  status_line minio minio_ready "$MINIO_PORT" "$(cat "$RUN/minio.pid" 2>/dev/null)" || ok=1
  local n
  for n in $(kafka_nodes); do
    status_line "$(kafka_name "$n")" "kafka_ready $n" "$(kafka_port "$n")" "$(cat "$RUN/$(kafka_name "$n").pid" 2>/dev/null)" || ok=1
  done
  status_line mlflow mlflow_ready "$MLFLOW_PORT" "$(cat "$RUN/mlflow.pid" 2>/dev/null)" || ok=1
  if [[ "$OBSERVABILITY" == 1 || -f "$RUN/prometheus.pid" ]]; then
    status_line prometheus prometheus_ready "$PROMETHEUS_PORT" "$(cat "$RUN/prometheus.pid" 2>/dev/null)" || ok=1
  fi
  if [[ "$OBSERVABILITY" == 1 || -f "$RUN/jaeger.pid" ]]; then
    status_line jaeger jaeger_ready "$JAEGER_PORT" "$(cat "$RUN/jaeger.pid" 2>/dev/null)" || ok=1
  fi
  return $ok
}

cmd_provision() {
  ensure_postgres_installed; ensure_kafka; ensure_minio
  if [[ "$OBSERVABILITY" == 1 ]]; then ensure_prometheus; ensure_jaeger; fi
}

# What the stack would use, after the environment and .env: one VAR=value a line.
cmd_env() {
  local name
  for name in MNISTREAM_DATA MNISTREAM_CACHE KAFKA_VERSION MINIO_VERSION PROMETHEUS_VERSION JAEGER_VERSION OBSERVABILITY PROMETHEUS_PORT JAEGER_PORT JAEGER_GRPC_PORT JAEGER_OTLP_PORT KAFKA_BROKERS KAFKA_BOOTSTRAP_SERVERS KAFKA_SASL_USERNAME \
    KAFKA_CONTROLLER_PORT DATABASE_URL S3_ENDPOINT_URL MINIO_CONSOLE_PORT MLFLOW_TRACKING_URI \
    ARTIFACTS_BUCKET MLFLOW_DATABASE; do
    case "$name" in
      MNISTREAM_DATA) echo "$name=$DATA" ;;
      MNISTREAM_CACHE) echo "$name=$CACHE" ;;
      *) echo "$name=${!name}" ;;
    esac
  done
  if [[ "$OBSERVABILITY" == 1 ]]; then
    # Where the services send their spans, and where the web page links each answer's trace
    # (Jaeger's API: the UI's assets cannot be built here; compose's Jaeger image has the UI).
    # A value set in the environment or .env (empty included: no tracing) is kept.
    echo "OTEL_EXPORTER_OTLP_ENDPOINT=${OTEL_EXPORTER_OTLP_ENDPOINT-http://127.0.0.1:$JAEGER_OTLP_PORT}"
    local jaeger_trace="http://127.0.0.1:$JAEGER_PORT/api/traces/{trace_id}"
    echo "TRACE_URL=${TRACE_URL-$jaeger_trace}"
  fi
}

# One component, for fault tests and operators: stop/start postgres|minio|kafka|mlflow, or one
# node of a cluster: kafka-1|kafka-2|kafka-3 (`kill` stops it with SIGKILL, as a crash would).
cmd_component() { # stop|start|kill name
  mkdir -p "$DATA" "$LOGS" "$RUN"
  case "$1:$2" in
    stop:postgres) down_postgres ;;
    stop:minio|stop:mlflow|stop:prometheus|stop:jaeger) stop_group "$2" ;;
    stop:kafka) down_kafka ;;
    stop:kafka-[123]) down_kafka "$(kafka_node_of "$2")" ;;
    kill:kafka-[123]) kill_kafka_node "$(kafka_node_of "$2")" ;;
    start:postgres) up_postgres ;;
    start:minio) up_minio ;;
    start:kafka) up_kafka ;;
    start:kafka-[123]) up_kafka "$(kafka_node_of "$2")" ;;
    start:mlflow) up_mlflow ;;
    start:prometheus) up_prometheus ;;
    start:jaeger) up_jaeger ;;
    *) say "usage: $0 stop|start postgres|minio|kafka|kafka-N|mlflow|prometheus|jaeger, or kill kafka-N"; exit 2 ;;
  esac
}

# The node id of the active controller (the KRaft quorum's leader), as Kafka's own tool says.
cmd_kafka_leader() {
  local cp; cp="$(kafka_classpath)" || die "Kafka is not provisioned"
  java -cp "$cp" -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.yaml" \
    org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
    --command-config "$(kafka_admin_properties)" describe --status 2>/dev/null | awk '/^LeaderId:/ {print $2}'
}

kafka_admin_properties() { # Kafka's own tools sign in as the operator with this file
  local file="$RUN/kafka-admin.properties"
  umask 077
  printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=PLAIN" \
    "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$KAFKA_SASL_USERNAME\" password=\"$KAFKA_SASL_PASSWORD\";" >"$file"
  echo "$file"
}

kafka_node_of() { # kafka-N -> N, when the stack has that node
  local n="${1#kafka-}"
  ((KAFKA_BROKERS > 1 && n <= KAFKA_BROKERS)) || die "$1: this stack has $KAFKA_BROKERS Kafka node(s) (KAFKA_BROKERS)"
  echo "$n"
}

kill_kafka_node() { # node: SIGKILL, no shutdown
  local name pid; name="$(kafka_name "$1")"
  [[ -f "$RUN/$name.pid" ]] || { say "$name is not running"; return 0; }
  pid="$(cat "$RUN/$name.pid")"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$RUN/$name.pid"
  say "killed $name"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  provision) cmd_provision ;;
  stop|start|kill) cmd_component "$1" "${2:-}" ;;
  kafka-leader) cmd_kafka_leader ;;
  *) say "usage: $0 up|down|status|env|provision|stop NAME|start NAME|kill kafka-N|kafka-leader"; exit 2 ;;
esac
