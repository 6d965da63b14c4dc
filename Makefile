# Runboard: `make run` to start everything locally, `make test` to run the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup run test bench bench-quick bench-run lint format lock clean

help:
	@echo "make run    set up (virtualenv, dependencies, Redis, migrations, demo login) and start web, worker, housekeeping and beat"
	@echo "make test   set up the same plus Chromium and axe-core, then run the whole test suite"
	@echo "make bench  run the benchmarks (real Redis, workers) and write bench/RESULTS.md"
	@echo "make bench-quick  the same as short smoke runs (--quick; not figures to quote)"
	@echo "make lint   ruff (lint and format), import contracts, mypy"
	@echo "make lock   refresh constraints.txt from the current virtualenv"

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  $(PYTHON) scripts/system_deps.py python3-venv && $(PYTHON) -m venv $(VENV); }

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	@touch $@

setup: $(STAMP)

run: setup
	$(BIN)/python scripts/run.py

# The whole suite on SQLite; then, when a PostgreSQL server answers (TEST_POSTGRES_URL, default
# the local one), the database-heavy tests again against it (not the browser, fault-injection and
# benchmark smoke tests: they test processes, not the database, and already ran), through a
# PgBouncer in transaction pooling mode (scripts/pgbouncer.py; issue 17 §2), the strictest way
# production runs it; directly when no pgbouncer could be installed.
test: setup
	$(PYTHON) scripts/system_deps.py redis-server chromium promtool npm
	@[ -f tests/a11y/node_modules/axe-core/axe.min.js ] || \
	  npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@if PG=$$($(BIN)/python scripts/postgres_url.py); then \
	  POOLER=""; if $(PYTHON) scripts/system_deps.py pgbouncer; then POOLER="$(BIN)/python scripts/pgbouncer.py --"; \
	    echo "PostgreSQL answers: running the database tests against it too, through PgBouncer"; \
	  else echo "PostgreSQL answers: running the database tests against it too (directly: no pgbouncer)"; fi; \
	  DATABASE_URL=$$PG $$POOLER $(BIN)/python -m pytest -m "not browser and not faults" \
	    tests/jobs tests/notifications tests/system --ignore tests/system/test_bench_smoke.py $(PYTEST_ARGS); \
	else \
	  echo "No PostgreSQL answers: SQLite only (set TEST_POSTGRES_URL to use one)"; \
	fi

# Every scenario of bench/README.md that exists, one script each (a failing script does not stop the
# others; make fails at the end), then bench/RESULTS.md. bench-quick: the same as smoke runs.
BENCH_SCRIPTS := progress_overhead throughput csv_profile primes_scaling \
                 transport fanout server_cost sockets_memory socket_db_connection asgi_servers load \
                 admission history scale_out layer_throughput db_statements
BENCH_ARGS ?=

bench: setup
	@$(MAKE) --no-print-directory bench-run BENCH_ARGS="$(BENCH_ARGS)"

bench-quick: setup
	@$(MAKE) --no-print-directory bench-run BENCH_ARGS="--quick $(BENCH_ARGS)"

bench-run:
	$(PYTHON) scripts/system_deps.py redis-server
	@if [ -f bench/requirements.txt ]; then \
	  $(BIN)/python -m pip install --quiet -r bench/requirements.txt -c constraints.txt; fi
	@failed=""; for s in $(BENCH_SCRIPTS); do \
	  [ -f bench/$$s.py ] || { echo "== bench/$$s.py: not there, skipped"; continue; }; \
	  echo "== bench/$$s.py $(BENCH_ARGS)"; start=$$(date +%s); \
	  $(BIN)/python bench/$$s.py $(BENCH_ARGS) || failed="$$failed $$s"; \
	  echo "== bench/$$s.py took $$(( $$(date +%s) - start )) s"; \
	done; \
	echo "== bench/transport.py --layer core (the default channel layer, to compare)"; \
	$(BIN)/python bench/transport.py --layer core --skip-staleness --rounds 2 $(BENCH_ARGS) || failed="$$failed transport-core"; \
	$(BIN)/python -m bench.collect; \
	if [ -n "$$failed" ]; then echo "Failed:$$failed"; exit 1; fi

# What `make test` checks before the suite (and .pre-commit-config.yaml on each commit): lint,
# formatting, the import contracts of .importlinter (every import points down), and types.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
