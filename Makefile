# K2: two commands on a fresh machine.
#   make demo  - set up everything and run the demo (local stack + real Binance capture -> Kafka -> Iceberg)
#   make test  - set up everything and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup deps venv lint typecheck bench clean

demo: setup
	$(BIN)/k2 demo

test: setup
	$(BIN)/pytest -q -n 4 --dist loadscope --no-loadscope-reorder --durations=15

setup: deps $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# System packages: PostgreSQL server binaries (tests start a real server) and promtool (alert rules).
deps:
	@bash scripts/install-system-deps.sh

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/pipeline_bench.py

clean:
	rm -rf .k2 .pytest_cache .mypy_cache .ruff_cache
