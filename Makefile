# edged — developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The versions Debian bookworm ships (what the .deb runs on), for `make test-bookworm`.
BOOKWORM_PINS := starlette==0.26.1 hypercorn==0.13.2 gpiozero==1.6.2 sqlite-utils==3.30 \
	tenacity==8.2.1 httpx==0.23.3 anyio==3.6.2 pytest==7.2.1 hypothesis==6.67.1 trustme==0.9.0
BW := .venv-bookworm

.PHONY: venv run test test-bookworm lint typecheck unit bench clean demo

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

test: lint typecheck unit test-bookworm

# The test suite against bookworm's library versions (the .deb's world) in a second venv.
$(BW)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BW)
	$(BW)/bin/pip install --quiet --upgrade pip
	$(BW)/bin/pip install --quiet $(BOOKWORM_PINS)
	$(BW)/bin/pip install --quiet --no-deps -e .
	touch $@

test-bookworm: $(BW)/.installed
	$(BW)/bin/pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python bench/receiver.py

# edged and two simulated terminals (etc/demo.toml): records, decisions, registrations move.
# Watch with `.venv/bin/edged events -f -c etc/demo.toml` and `.venv/bin/edged status -c etc/demo.toml`.
DEMO := etc/demo.toml
demo: venv
	mkdir -p var/demo
	$(BIN)/edged people import etc/demo-people.csv -c $(DEMO)
	$(BIN)/edged simulate --from-config --rate 0.5 --cert-dir var/demo/certs -c $(DEMO) & \
	sim=$$!; trap 'kill $$sim' EXIT INT TERM; sleep 2; \
	$(BIN)/edged terminals trust lobby --yes -c $(DEMO) && \
	$(BIN)/edged terminals trust gate --yes -c $(DEMO) && \
	$(BIN)/edged run -c $(DEMO)

clean:
	rm -rf $(VENV) $(BW) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
