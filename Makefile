# triomcp: `make serve` runs a node with embedded defaults, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUICK ?=

.PHONY: install serve test lint bench reliability clean wrk

# The benchmarks' load generator: a system package (apt-get as root, else say how).
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq wrk; } \
		|| { echo "make bench needs wrk: sudo apt-get install wrk (or brew install wrk)" >&2; exit 1; }

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "triomcp needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/triomcp serve --bind 127.0.0.1:8080

test: $(STAMP)
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/mypy

bench: $(STAMP) wrk
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

reliability: $(STAMP) wrk
	$(BIN)/python -m reliability $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
