# Mirrors what the README and CI do. `make test` is the README's test command.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint up down bench

install:
	python3 -m venv $(VENV) && $(BIN)/pip install -e '.[dev]'

test:
	python3 -m venv $(VENV) && $(BIN)/pip install -e '.[test]' && $(BIN)/pytest

lint:
	$(BIN)/ruff check devctl tests bench && $(BIN)/ruff format --check devctl tests bench && $(BIN)/mypy

up:
	$(BIN)/devctl up

down:
	$(BIN)/devctl down

bench:
	$(BIN)/python bench/bench_up.py --write docs/benchmarks.md
	@for b in bench/bench_state.py bench/bench_events.py bench/bench_cli_latency.py bench/bench_api.py; do \
		if [ -f $$b ]; then $(BIN)/python $$b --write docs/benchmarks.md || exit 1; fi; done
