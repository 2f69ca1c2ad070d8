# cryptolake: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?=
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG),)
PYTEST_ARGS ?=
# Two pytest workers: the Spark tests in one (one JVM, in order), the rest in the other (tests/conftest.py).
PYTEST_WORKERS ?= 2
DEMO_ARGS ?=
RUN_ARGS ?=
BENCH_ARGS ?=

.PHONY: help setup check format test run demo bench clean

help: ## List every target
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  make %-14s %s\n", $$1, $$2}'

setup: ## Install: venv + package (editable, dev extras) + Spark jars (cached); Kafka/MinIO only when asked (docs/run.md)
	@bash infra/setup.sh

check: setup ## Lint, type-check, import layering (ruff, ruff format --check, mypy, infra.check_imports)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy extractors spark_jobs lake expectations infra
	$(PY) -m infra.check_imports

format: setup ## Apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: export CRYPTOLAKE_SETUP_CHROMIUM = 1
test: export CRYPTOLAKE_SETUP_SERVICES = kafka,minio,postgres,redis
test: setup check ## setup + check + the whole test suite (unit, Spark, integration) against real services
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

run: export CRYPTOLAKE_SETUP_SERVICES = $(if $(filter kafka,$(BUS)),kafka,)
run: setup ## The live lake until Ctrl-C: extractors -> bus -> Spark -> ./lake-data + web server (SOURCE=sim|live BUS=kafka LAKE=s3a://..)
	$(PY) -m infra.run $(CONFIG_ARG) $(RUN_ARGS)

demo: setup ## Self-checking demo: simulator -> extractor 30 s -> Spark backfill -> compare with truth (var/demo)
	$(PY) -m infra.demo $(DEMO_ARGS)

bench: setup ## Every benchmark (infra/bench/): print figures, write them to bench-results.json (BENCH_ARGS="--only gold --quick")
	$(PY) -m infra.bench --out bench-results.json $(BENCH_ARGS)

.PHONY: sql
Q ?= SELECT exchange, symbol, minute, close, volume FROM gold.ohlcv_1m ORDER BY minute DESC LIMIT 10

sql: setup ## Query the lake by table name, no JVM (DuckDB over Delta): make sql Q="SELECT ..."
	$(PY) -m lake sql "$(Q)"

.PHONY: sql-server
THRIFT_PORT ?= 10000

sql-server: setup ## Serve the tables over JDBC (Spark Thrift server) on 127.0.0.1:10000 (THRIFT_PORT=...) until Ctrl-C
	$(PY) -m lake $(CONFIG_ARG) thrift --port $(THRIFT_PORT)

.PHONY: infra-up infra-down infra-status
ONLY ?=
ONLY_ARG := $(if $(ONLY),--only $(ONLY),)

infra-up: export CRYPTOLAKE_SETUP_SERVICES = $(if $(ONLY),$(ONLY),kafka,minio)
infra-up: setup ## Start local Kafka (KRaft) and MinIO in the background (ONLY=kafka|minio|postgres|redis); state in .cache/services
	$(PY) -m infra.services up $(ONLY_ARG)

infra-down: ## Stop the local services started by infra-up (their data stays in .cache/services; ONLY=...)
	$(PY) -m infra.services down $(ONLY_ARG)

infra-status: ## Show whether the local services run, with endpoints (python -m infra.services env: exports)
	$(PY) -m infra.services status $(ONLY_ARG)

clean: ## Remove local lake data, checkpoints and caches (keeps .venv and the jars)
	rm -rf lake-data lake-sim spark-warehouse .pytest_cache .mypy_cache .ruff_cache

.PHONY: serve
SERVE_ARGS ?=

serve: setup ## Web server: live prices (WebSocket/SSE), gold over REST, the page: http://127.0.0.1:8321/
	$(PY) -m lake.serve $(CONFIG_ARG) $(SERVE_ARGS)

.PHONY: dq-report
DQ_REPORT ?= var/dq-report/index.html

dq-report: setup ## One-page HTML data-quality summary (pass rates, quarantine, completeness): DQ_REPORT=var/dq-report/index.html
	$(PY) -m expectations $(CONFIG_ARG) report --out $(DQ_REPORT)
