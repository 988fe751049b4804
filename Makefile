PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Directories ruff checks; mypy covers the package only.
LINT_PATHS := src tests bench docs

.PHONY: venv demo test lint bench

venv: $(VENV)/.installed

# The stamp makes `make venv` a no-op until pyproject.toml (the dependency list) changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -U pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/otameter serve --demo

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python bench/run.py
