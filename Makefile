# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-memory faults install clean browser sodium prometheus

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# setuptools warns about every editable install of a package that sits in the current folder.
$(STAMP): pyproject.toml | $(BIN)/python
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) sodium

demo: $(STAMP)
	$(BIN)/referral demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The console's browser tests drive Debian's chromium (Playwright never downloads one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x /usr/bin/chromium || ($(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium)

# The metrics test scrapes the processes with Debian's prometheus (promtool checks the rules).
prometheus:
	@test -x /usr/bin/prometheus -a -x /usr/bin/promtool || ($(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus)

# The OPRF of broker/known calls ristretto255 in Debian's libsodium23 (through pysodium).
SODIUM_OK = dpkg-query -W -f='$${Status}' libsodium23 2>/dev/null | grep -q 'install ok installed'
sodium:
	@$(SODIUM_OK) || ($(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libsodium23) || true
	@$(SODIUM_OK) || (echo "libsodium23 is missing: install it with 'apt-get install libsodium23'" >&2; exit 1)

# Three workers (the tests mostly wait on the broker), each with its own embedded broker;
# the suites that run whole networks of processes share one worker (xdist group
# "processes", tests/conftest.py).
TEST_WORKERS ?= 3
test: $(STAMP) sodium lint typecheck browser prometheus
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

unit: $(STAMP) sodium
	$(BIN)/python -m pytest -m "not integration"

bench: $(STAMP)
	$(BIN)/python -m bench.route
	$(BIN)/python -m bench.network

bench-memory: $(STAMP)
	$(BIN)/python -m bench.memory --router 1000000 --sink 200000

# The fault matrix: every component its own process, faults injected; writes bench/FAULTS.md.
FAULTS_N ?= 300
faults: $(STAMP)
	$(BIN)/python -m bench.faults --n $(FAULTS_N) --out bench/FAULTS.md

clean:
	rm -rf $(VENV) .referral .pytest_cache .mypy_cache .ruff_cache build *.egg-info
