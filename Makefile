# edged — developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test lint typecheck unit bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: venv
	$(BIN)/edged run -c etc/dev.toml

unit: venv
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check edged tests bench
	$(BIN)/ruff format --check edged tests bench

typecheck: venv
	$(BIN)/mypy

test: lint typecheck unit

bench: venv
	$(BIN)/python bench/receiver.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
