# Two entry points: `make audit` (the default audit) and `make test` (the test suite).
# Each creates .venv and installs kdaudit with the pinned versions of constraints.txt,
# plus the Debian packages it needs (Fashion-MNIST data, Chromium for the report test).
# `make test` is the two tiers, the fast one first: `make test-fast` (every module, a few minutes, no system
# packages: tests whose data or browser is missing skip) and `make test-slow` (end to end, crash
# safety, executors, tracking, every named setup, long training). `make lint`: ruff and mypy.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdaudit-installed
PYTEST_ARGS ?=

.PHONY: audit test test-fast test-slow lint bench system-deps install clean

audit: install system-deps
	$(BIN)/kdaudit run

test: install system-deps
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install system-deps
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_training.py

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# torchattacks only cross-checks kdaudit's own FGSM/PGD in the tests; its declared
	# dependencies (torchvision) would replace the CPU torch, so it goes in without them
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

clean:
	rm -rf $(VENV) kdaudit-out .pytest_cache
