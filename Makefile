# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
SERVER ?= uvicorn
export HOST PORT SERVER
# Bytecode caches are written (Python's default): otherwise every test worker
# and server process compiles, and pytest rewrites, every module again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test test-fast lint format bench soak migrate venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

migrate: venv
	$(BIN)/python manage.py migrate --noinput

# SERVER=daphne serves with daphne instead of uvicorn (see config/servers.py).
run: migrate
	$(BIN)/python -m config.servers

# The suite on TEST_WORKERS processes (most tests wait on servers and
# sockets, so more workers than cores), then the tests that measure latency,
# alone. Wall time on 2 cores: see README, Development.
TEST_WORKERS ?= 4
PARALLEL := -n $(TEST_WORKERS) --dist loadgroup
test: venv
	$(BIN)/python -m pytest $(PARALLEL) -m "not serial"
	$(BIN)/python -m pytest -m serial tests/e2e

# Everything but the end-to-end, browser and client tests: under a minute.
# Three workers: these tests wait less, and a fourth costs more than it brings.
FAST_WORKERS ?= 3
test-fast: venv
	$(BIN)/python -m pytest -n $(FAST_WORKERS) --dist loadgroup -m "not serial" tests \
		--ignore=tests/e2e --ignore=tests/browser --ignore=tests/client

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Fan-out, per-user, polls, idle sockets beside their baselines; one table.
# `make bench BENCH_ARGS=--quick` (~5 min), --cases 1,6, --server uvicorn, --json FILE.
bench: venv
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench $(BENCH_ARGS)

# A longer soak than make test's: tabs dropping and resuming, a restart.
# INSTANCES=2: two instances on the Redis at REDIS_URL.
INSTANCES ?= 1
soak: venv
	$(BIN)/python -m bench.soak --seconds 120 --instances $(INSTANCES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
