# bsrlc: every target sets up .venv first (idempotent; fast when already done).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true

.PHONY: install test test-slow lint format typecheck demo bench mutants faults clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -m "not slow" --timeout=900

test-slow: install
	$(BIN)/python -m pytest -q -m slow --timeout=3600

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	$(BIN)/python -m bsrlc.demo

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

# deliberate breaks in a scratch copy of HEAD; every one must fail the fast tests (scripts/mutants.py)
mutants: install
	nice $(BIN)/python scripts/mutants.py

# kill -9, a full disk, concurrent runs, truncated checkpoints, odd inputs (slow: scripts/faults.py)
faults: install
	nice $(BIN)/python scripts/faults.py

clean:
	rm -rf outputs logs multirun .pytest_cache .ruff_cache .mypy_cache
