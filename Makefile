# edged — developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The versions Debian bookworm ships (what the .deb runs on), for `make test-bookworm`.
BOOKWORM_PINS := starlette==0.26.1 hypercorn==0.13.2 gpiozero==1.6.2 sqlite-utils==3.30 \
	tenacity==8.2.1 httpx==0.23.3 anyio==3.6.2 pytest==7.2.1 hypothesis==6.67.1 trustme==0.9.0 \
	zeroconf==0.47.3 paho-mqtt==1.6.1 jinja2==3.1.2 markupsafe==2.1.2 prometheus-client==0.16.0
BW := .venv-bookworm
# Debian's own interpreter (3.11.2 on bookworm) where there is one: its asyncio differs.
BW_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo $(PYTHON))

.PHONY: venv run test test-bookworm lint typecheck unit bench bench-sdcard bench-replay clean demo

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,simulator,discovery]'
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
$(BW)/.installed: pyproject.toml Makefile
	$(BW_PYTHON) -m venv $(BW)
	$(BW)/bin/pip install --quiet --upgrade pip
	$(BW)/bin/pip install --quiet $(BOOKWORM_PINS)
	$(BW)/bin/pip install --quiet --no-deps -e .
	touch $@

test-bookworm: $(BW)/.installed
	$(BW)/bin/pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python bench/receiver.py

# fsync slowed to an SD card's pace (bench/tools/slowsync.c, built with cc); BASE=DIR also runs
# another revision's code alternately (e.g. `git worktree add /tmp/base main`).
bench-sdcard: venv
	$(BIN)/python bench/sdcard.py $(if $(BASE),--base $(BASE))

# A terminal's 50,000-record replay after an outage with live remote-auth beside it; then the
# same on a gateway-class CPU (one core at a third of its speed, a cgroup quota: root needed).
bench-replay: venv
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/replay.py --gateway-cpu

# edged and two simulated terminals (etc/demo.toml): records, decisions, registrations move.
# Watch with `.venv/bin/edged events -f -c etc/demo.toml` and `.venv/bin/edged status -c etc/demo.toml`.
DEMO := etc/demo.toml
demo: venv
	mkdir -p var/demo
	$(BIN)/edged people import etc/demo-people.json -c $(DEMO)
	$(BIN)/edged simulate --from-config --rate 0.5 --cert-dir var/demo/certs -c $(DEMO) & \
	sim=$$!; trap 'kill $$sim' EXIT INT TERM; sleep 2; \
	$(BIN)/edged terminals trust lobby --yes -c $(DEMO) && \
	$(BIN)/edged terminals trust gate --yes -c $(DEMO) && \
	$(BIN)/edged run -c $(DEMO)

clean:
	rm -rf $(VENV) $(BW) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# ----- Debian package -----------------------------------------------------------------------
# Built from a copy of the tracked tree (plus new, not ignored files) with a clean system PATH:
# pyenv's or a venv's python first on PATH breaks dpkg-buildpackage. The .deb lands in dist/.
DEB_TREE := build/deb/edged
SYSPATH := /usr/sbin:/usr/bin:/sbin:/bin

.PHONY: deb lintian man smoke vm-test test-trixie piuparts

deb:
	rm -rf build/deb && mkdir -p $(DEB_TREE) dist
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(DEB_TREE)
	cd $(DEB_TREE) && env -i PATH=$(SYSPATH) HOME=$(HOME) LC_ALL=C.UTF-8 \
		dpkg-buildpackage -us -uc -b
	rm -f dist/edged_*
	mv build/deb/edged_* dist/
	$(MAKE) --no-print-directory lintian

lintian:
	env -i PATH=$(SYSPATH) HOME=$(HOME) LC_ALL=C.UTF-8 \
		lintian --fail-on error,warning --display-info dist/edged_*.changes

man:
	python3 man/mkman.py build/man

# The smoke test CI runs against the installed /usr/bin/edged, here against the dev venv's.
smoke: venv
	python3 tests/smoke/smoke.py $(BIN)/edged

# The suite against the .deb installed with apt in a debootstrapped Debian 13 trixie root, on
# trixie's Python 3.13 and python3-* packages (root needed; the base root is cached).
test-trixie: deb
	tests/trixie/world.sh

# Debian's piuparts on bookworm and trixie: install/purge, and the upgrade from the previous
# release with real data in /var/lib/edged (root needed; base chroots are cached).
piuparts: deb
	tests/upgrade/piuparts.sh

# Boots the package under qemu with a real systemd and checks it from outside (root needed).
vm-test: deb
	tests/vm/vm-test.sh
