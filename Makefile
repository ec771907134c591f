# Every target sets up what it needs on a fresh machine: a virtualenv with the package and its dev
# dependencies, and ZooKeeper (plus nginx, git) through apt-get when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
PYTEST_ARGS ?=
# two workers, each with its own ZooKeeper (the suite waits on timeouts far more than it computes)
PYTEST_WORKERS ?= 2

.PHONY: setup system-deps venv test lint demo bench chaos mutate mutmut clean

setup: system-deps venv

system-deps:
	@scripts/ensure-system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check aiocoord services tests bench chaos scripts
	$(VENV)/bin/ruff format --check aiocoord services tests bench chaos scripts
	$(VENV)/bin/mypy

# the demo needs only the package (no dev tools) and ZooKeeper (no nginx, no git)
demo: $(DEMO_STAMP)
	@scripts/ensure-system-deps --zookeeper-only
	$(VENV)/bin/aiocoord demo

$(DEMO_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	@touch $(DEMO_STAMP)

bench: setup
	$(PY) -m bench

# the fault campaign: every workload for DURATION seconds per seed, one table; exits 1 on any
# invariant violation (slow: CI runs a short fixed-seed campaign inside `make test` instead)
DURATION ?= 600
SEEDS    ?= 1,2,3
chaos: setup
	$(PY) -m chaos --duration $(DURATION) --seeds $(SEEDS)

# curated mutations of the session layer, each must be killed by a test (slow: not in CI)
mutate: setup
	PYTHON=$(PY) $(PY) scripts/mutate.py

# mutmut over the modules that need no server, scored per module (slow-ish: not in CI)
mutmut: venv
	$(PY) -m pip install -q -e '.[dev,mutation]'
	$(PY) scripts/mutmut_report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
