# Every target installs what it needs into a local virtual environment (.venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit live cluster cluster-down bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev,ray,kubernetes,mcp,pip]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	@$(BIN)/python examples/training-upgrade/demo.py

lint: $(STAMP)
	$(BIN)/ruff check clusterbisect tests probes benchmarks examples
	$(BIN)/ruff format --check clusterbisect tests probes benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --ignore-missing-imports --check-untyped-defs tests/cluster

unit: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m "not live"

# The local Kubernetes control plane (docs/cluster.md): built from Go modules the first
# time (several minutes), then up in seconds. Its kubeconfig: .cluster/kubeconfig.
CLUSTER := $(BIN)/python tests/cluster/cluster.py
LIVE_ENV := CLUSTERBISECT_KUBECONFIG=$(CURDIR)/.cluster/kubeconfig \
	CLUSTERBISECT_CONTEXT=clusterbisect-local CLUSTERBISECT_NAMESPACE=clusterbisect \
	CLUSTERBISECT_LIVE_REQUIRED=1 RAY_AUTH_MODE=disabled

cluster: $(STAMP)
	@$(CLUSTER) up

cluster-down: $(STAMP)
	@$(CLUSTER) down

# The live suite on a fresh cluster, which is always taken down afterwards (also on a
# failure or Ctrl-C). A cluster left by a killed run is cleared first.
live: $(STAMP)
	@trap '$(CLUSTER) down' EXIT; trap 'exit 130' INT TERM; \
	$(CLUSTER) down >/dev/null && $(CLUSTER) up && \
	$(LIVE_ENV) $(BIN)/python -m pytest -q -m live

test: lint typecheck unit live

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .clusterbisect .pytest_cache .mypy_cache .ruff_cache .cluster
