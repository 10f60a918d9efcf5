# Mallard's commands. `make demo` and `make test` are the two that set everything up.
SHELL := /bin/bash
export MALLARD_HOME ?= $(CURDIR)/.mallard
export DAGSTER_HOME ?= $(MALLARD_HOME)/dagster
# llama-cpp-python compiles from source here; these flags cut the build to a few minutes.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export UV_PYTHON ?= 3.11
# Byte-compile site-packages at install: where PYTHONDONTWRITEBYTECODE is set, every process
# would otherwise recompile dagster, pandas & co. on each import.
export UV_COMPILE_BYTECODE ?= 1

UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.bootstrap/bin/uv)
RUN := $(UV) run --frozen
# The servers start without uv re-checking the environment: `install` already did, and only
# when the lock or pyproject changed since (its stamp inside .venv says when it last synced).
RUN_SYNCED := $(UV) run --no-sync
INSTALLED := $(CURDIR)/.venv/.mallard-synced
DEV_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: install services demo test test-slow dev serve mlflow bench lint clean

$(CURDIR)/.bootstrap/bin/uv:
	python3 -m venv $(CURDIR)/.bootstrap
	$(CURDIR)/.bootstrap/bin/pip install --quiet "uv==0.13.9"

install: $(INSTALLED)

$(INSTALLED): uv.lock pyproject.toml | $(UV)
	@# --inexact: packages of other groups (`make test-slow`'s local models) stay installed
	$(UV) sync --frozen --inexact
	touch $@

# Servers the tests start on 127.0.0.1 (Redis, PostgreSQL) come from Debian's packages.
services:
	bash scripts/install-services.sh

demo: install
	$(RUN) python -m pipelines.demo

test: install services
	$(RUN) pytest -m "not slow" --durations=20

test-slow: install services
	$(UV) sync --frozen --group local-models
	$(RUN) pytest -m slow

# The Dagster webserver and daemon (`dg dev`) over the demo's instance (DAGSTER_HOME), as the code
# location `mallard` (pyproject's [tool.dg.project]); Ctrl-C or SIGTERM stops both within 10 s
# (pipelines/dev.py).
dev: install
	@# The API server beside the UI: its /reports are the plots and reports the UI links to.
	MALLARD_DEV_PARENT=$$PPID $(RUN) bash scripts/dev-api.sh
	exec $(RUN_SYNCED) python -m pipelines.dev --host 127.0.0.1 --port $(DEV_PORT)

# The API (docs/API.md) on MALLARD_SERVE_HOST:MALLARD_SERVE_PORT (127.0.0.1:8000) with
# MALLARD_SERVE_WORKERS workers; it serves the models `make demo` trained.
serve: install
	$(RUN) mallard serve

# One worker and no job runner (MLflow's GenAI jobs: 7 more processes Mallard does not use) keep
# the start within seconds on 2 cores.
mlflow: install
	$(RUN_SYNCED) python -c "from mallard.config import get_settings; get_settings().ensure_home()"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec $(RUN_SYNCED) mlflow ui --workers 1 --backend-store-uri "sqlite:///$(MALLARD_HOME)/mlflow/mlflow.db" --host 127.0.0.1 --port $(MLFLOW_PORT)

# Every benchmark at its default size, each against its peer or raw baseline (about an hour on
# 2 cores; Feast gets its own venv under MALLARD_HOME/bench). Figures: docs/BENCHMARKS.md.
bench: install
	$(RUN) python benchmarks/load_time.py
	$(RUN) python benchmarks/llm_client.py
	$(RUN) python benchmarks/graders.py --calibrate smollm2-local --calibration-limit 12
	$(RUN) python benchmarks/promotion_gate.py
	$(RUN) python benchmarks/drift.py
	$(RUN) python benchmarks/feature_store.py
	$(RUN) python benchmarks/traces_ingest.py

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

clean:
	rm -rf $(MALLARD_HOME)
