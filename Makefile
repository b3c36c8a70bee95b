# One command for the tests: `make test` installs what it needs and runs every
# tier. Everything Python goes into a project virtual environment (.venv/,
# made from the machine's python3 and reused while its inputs are unchanged);
# the control plane's binaries are built once into ~/.cache/wattcap/bin;
# Prometheus comes from Debian. Nothing is taken from the global Python.
# A tier that cannot run fails; nothing is skipped into green.

SYSTEM_PYTHON ?= python3
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
PYTEST := $(PY) -m pytest
# The venv's tools first (ruff, wattcap, kubectl-wattcap), then the cached
# control-plane binaries; Go where its tarball puts it, for a bare PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(HOME)/.cache/wattcap/bin:$(PATH):/usr/local/go/bin
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

# Inputs of the install: the package's metadata and the modules it compiles.
# An edit to either re-runs `pip install -e`, which rebuilds the extensions.
INSTALL_INPUTS := pyproject.toml setup.py operator/wattcap/profile.py \
	operator/wattcap/sim/meter_math.py

.PHONY: test deps venv tools lint unit integration bench mutation cluster-up cluster-down clean \
	chaos fuzz load

test: deps tools lint unit integration

venv: deps

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,agent]'
	touch $@

deps: $(VENV)/.installed

tools:
	hack/install-tools.sh

lint: deps
	ruff check .
	ruff format --check .
	helm lint charts/wattcap

unit: deps
	$(PYTEST) -q tests/unit

# The fixture starts the control plane once; it is stopped whatever the result.
integration: deps
	$(PYTEST) -q tests/integration; rc=$$?; hack/cluster.sh down >/dev/null 2>&1; exit $$rc

bench: deps
	$(PY) bench/bench_decide.py
	$(PY) bench/bench_cycle.py
	$(PY) bench/bench_sim.py

# Deliberate breaks of the decision core: each must fail the core's unit tests.
mutation: deps
	$(PY) bench/mutation_check.py

# The long passes of the chaos suite and the fuzz (make test runs short ones).
CHAOS_SEED ?= 15
# a comma-separated subset of the faults (test_chaos.py names them): one part of a split run
CHAOS_FAULTS ?=
FUZZ_BATCHES ?= 40

chaos: deps tools
	WATTCAP_CHAOS=full WATTCAP_CHAOS_SEED=$(CHAOS_SEED) WATTCAP_CHAOS_FAULTS="$(CHAOS_FAULTS)" $(PYTEST) -q -s -p no:cacheprovider \
		tests/integration/test_chaos.py; rc=$$?; hack/cluster.sh down >/dev/null 2>&1; exit $$rc

fuzz: deps tools
	WATTCAP_FUZZ_BATCHES=$(FUZZ_BATCHES) $(PYTEST) -q -s -p no:cacheprovider \
		tests/integration/test_fuzz.py; rc=$$?; hack/cluster.sh down >/dev/null 2>&1; exit $$rc

# Load: NODES kwok nodes x 8 GPUs, a burst of JOBS TrainingJobs, this tree's
# operator and then REF's (a worktree of an older commit with its own .venv).
NODES ?= 100
JOBS ?= 500
REF ?=

load: deps tools
	hack/cluster.sh down >/dev/null 2>&1; $(PY) bench/load.py --nodes $(NODES) --jobs $(JOBS) \
		$(if $(REF),--ref $(REF)); rc=$$?; hack/cluster.sh down >/dev/null 2>&1; exit $$rc

cluster-up:
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

clean:
	hack/cluster.sh down || true
	rm -rf .pytest_cache .ruff_cache .hypothesis build *.egg-info $(VENV)

# The whole stack on this machine with a demand-response window ahead (hack/demo.sh).
.PHONY: demo demo-down alerts-test
demo: deps tools
	hack/demo.sh up

demo-down:
	hack/demo.sh down

# The chart's alert rules under promtool (also part of the unit tier).
alerts-test: deps
	$(PYTEST) -q tests/unit/test_alerts.py
