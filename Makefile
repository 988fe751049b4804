PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Directories ruff checks; mypy covers the package only.
LINT_PATHS := src tests bench docs

.PHONY: venv runtime demo test lint bench

# `make demo` needs only what otameter runs with; the dev tools (tests, linters, browser)
# come with `make venv`, which `make test` uses.
runtime: $(VENV)/.runtime
venv: $(VENV)/.installed

# The stamps make these no-ops until pyproject.toml (the dependency list) changes.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -U pip
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: runtime
	$(BIN)/otameter serve --demo

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python bench/run.py
