# Larder: `make run` starts the whole demo, `make test` runs the whole suite.
# Both set up everything they need on a fresh machine (venv, memcached, nginx, dbt manifest).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LARDER_HOME ?= $(CURDIR)/.larder
export LARDER_WAREHOUSE_PATH ?= $(LARDER_HOME)/warehouse.duckdb
export DAGSTER_HOME ?= $(LARDER_HOME)/dagster
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run stop test test-fast coverage bench chaos manifest memcached install lint clean docs

run: install memcached manifest
	$(BIN)/larder up

stop:
	@if [ -x $(BIN)/larder ]; then $(BIN)/larder down; else echo "nothing to stop"; fi

# The README's command reference, from the argument parser (tests/test_cli_reference.py fails when stale).
docs: install
	$(BIN)/python -m orchestration.cli_reference

test: install memcached manifest
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The in-process layer only (config, store, mapping, diff, apply, definitions, the API through falcon's
# TestClient, against real memcached, DuckDB, SQLite, Postgres, MariaDB): what `make test` runs but the
# tests marked `slow`, which start gunicorn, nginx, dagster-webserver, a browser, dbt or `larder` processes.
test-fast: install memcached manifest
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The whole suite under coverage.py, with the Python processes it starts measured too (pyproject.toml's
# [tool.coverage.run]): a line per file and the total; `.venv/bin/coverage html` for the lines missed.
coverage: install memcached manifest
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS); status=$$?; \
	  $(BIN)/coverage combine --quiet && $(BIN)/coverage report; exit $$status

bench: install memcached manifest
	$(BIN)/python -m bench

# Faults under load (memcached killed or frozen, state store hung, workers killed, slow clients):
# a few minutes; writes bench/results/chaos.json. Not part of `make test`.
chaos: install memcached
	$(BIN)/python -m bench.chaos

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "larder: $(PYTHON) is needed (set PYTHON=... to use another)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# memcached, nginx and wrk, through apt when missing.
memcached:
	@sh .ci/install-memcached

# The same --vars as Dagster's dbt builds (orchestration/assets/dbt.py), so they reuse this parse.
manifest: install
	@mkdir -p $(LARDER_HOME)
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir . --project-dir . \
		--vars '{"larder_warehouse_path": "$(LARDER_WAREHOUSE_PATH)"}'

lint: install
	$(BIN)/python -m ruff check orchestration serving tests bench
	$(BIN)/python -m mypy

clean: stop
	rm -rf $(LARDER_HOME) dbt_project/target dbt_project/logs
