# One command for the tests: `make test` installs what it needs (Python deps,
# the Go-built control plane, Debian's Prometheus) and runs every tier.
# A tier that cannot run fails; nothing is skipped into green.

PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
export PATH := $(HOME)/.cache/wattcap/bin:$(PATH)

.PHONY: test deps tools lint unit integration bench cluster-up cluster-down clean

test: deps tools lint unit integration

deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

tools:
	hack/install-tools.sh

lint:
	ruff check .
	ruff format --check .
	helm lint charts/wattcap

unit:
	$(PYTEST) -q tests/unit

# The fixture starts the control plane once; it is stopped whatever the result.
integration:
	$(PYTEST) -q tests/integration; rc=$$?; hack/cluster.sh down >/dev/null 2>&1; exit $$rc

bench:
	$(PYTHON) bench/bench_decide.py
	$(PYTHON) bench/bench_sim.py

cluster-up:
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

clean:
	hack/cluster.sh down || true
	rm -rf .pytest_cache .ruff_cache .hypothesis build *.egg-info
