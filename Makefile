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

.PHONY: install services demo test test-slow dev serve mlflow bench lint clean

$(CURDIR)/.bootstrap/bin/uv:
	python3 -m venv $(CURDIR)/.bootstrap
	$(CURDIR)/.bootstrap/bin/pip install --quiet "uv==0.13.9"

install: $(UV)
	$(UV) sync --frozen

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

dev: install
	$(RUN) python -c "from mallard.config import get_settings; get_settings().ensure_home()"
	$(RUN) dg dev --host 127.0.0.1 --port 3000

# The API (docs/API.md) on MALLARD_SERVE_HOST:MALLARD_SERVE_PORT (127.0.0.1:8000) with
# MALLARD_SERVE_WORKERS workers; it serves the models `make demo` trained.
serve: install
	$(RUN) mallard serve

mlflow: install
	$(RUN) python -c "from mallard.config import get_settings; get_settings().ensure_home()"
	$(RUN) mlflow ui --backend-store-uri "sqlite:///$(MALLARD_HOME)/mlflow/mlflow.db" --host 127.0.0.1 --port 5000

# Every benchmark at its default size, each against its peer or raw baseline (about an hour on
# 2 cores; Feast gets its own venv under MALLARD_HOME/bench). Figures: docs/BENCHMARKS.md.
bench: install
	$(RUN) python benchmarks/load_time.py
	$(RUN) python benchmarks/llm_client.py
	$(RUN) python benchmarks/graders.py --calibrate smollm2-local --calibration-limit 12
	$(RUN) python benchmarks/promotion_gate.py
	$(RUN) python benchmarks/drift.py
	$(RUN) python benchmarks/feature_store.py

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

clean:
	rm -rf $(MALLARD_HOME)
