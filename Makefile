# The two commands that do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

# Development defaults for `make run`; an operator sets these in the environment instead.
export FLATTRFED_DATA_DIR ?= $(CURDIR)/var
export FLATTRFED_BASE_URL ?= http://$(HOST):$(PORT)
export FLATTRFED_ALLOW_HTTP ?= 1

.PHONY: run test lint demo clean

$(BIN)/flattrfed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "flattrfed needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/flattrfed
	$(BIN)/flattrfed db upgrade
	$(BIN)/flattrfed serve --host $(HOST) --port $(PORT)

test: $(BIN)/flattrfed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/flattrfed
	$(BIN)/ruff check flattrfed tests
	$(BIN)/ruff format --check flattrfed tests
	$(BIN)/mypy

demo: $(BIN)/flattrfed
	$(BIN)/flattrfed demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist

# Performance benchmarks (tests/benchmarks): `make bench BENCH_ARGS="--scale full"` for the real run.
BENCH_ARGS ?= --scale small
.PHONY: bench
bench: $(BIN)/flattrfed
	$(BIN)/python -m tests.benchmarks $(BENCH_ARGS)

# The user guide's screenshots (docs/screenshots/), taken by the browser journey in Chromium.
.PHONY: screenshots
screenshots: $(BIN)/flattrfed
	$(BIN)/python -m tests.browser.guide_screenshots
