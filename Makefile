# Runboard: `make run` to start everything locally, `make test` to run the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help setup run test bench lint format lock clean

help:
	@echo "make run    set up (virtualenv, dependencies, Redis, migrations, demo login) and start web, worker and beat"
	@echo "make test   set up the same plus Chromium, then run the whole test suite"
	@echo "make bench  run the benchmarks (real Redis, workers) and write bench/RESULTS.md"
	@echo "make lint   ruff"
	@echo "make lock   refresh constraints.txt from the current virtualenv"

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  $(PYTHON) scripts/system_deps.py python3-venv && $(PYTHON) -m venv $(VENV); }

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	@touch $@

setup: $(STAMP)

run: setup
	$(BIN)/python scripts/run.py

# The whole suite on SQLite; then, when a PostgreSQL server answers (TEST_POSTGRES_URL, default
# the local one), the database-heavy tests again against it.
test: setup
	$(PYTHON) scripts/system_deps.py redis-server chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@if PG=$$($(BIN)/python scripts/postgres_url.py); then \
	  echo "PostgreSQL answers: running the database tests against it too"; \
	  DATABASE_URL=$$PG $(BIN)/python -m pytest -m "not browser" tests/jobs tests/notifications tests/system $(PYTEST_ARGS); \
	else \
	  echo "No PostgreSQL answers: SQLite only (set TEST_POSTGRES_URL to use one)"; \
	fi

bench: setup
	$(PYTHON) scripts/system_deps.py redis-server
	$(BIN)/python bench/progress_overhead.py
	$(BIN)/python bench/csv_profile.py --size-mb 100 --runs 3
	$(BIN)/python bench/primes_scaling.py
	$(BIN)/python -m bench.collect

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
