# The README's two commands live here so they stay true: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"

demo: install
	$(BIN)/python -m delta_platform.demo up

test: install
	$(BIN)/ruff check delta_platform delta_platform_tests benchmarks
	CI=$${CI:-} $(BIN)/python -m pytest -n 2 -q delta_platform_tests
	# PostgreSQL's guarantees once more with every row read through ADBC (the binary COPY's fallback)
	DELTA_PLATFORM_PG_COPY=0 CI=$${CI:-} $(BIN)/python -m pytest -n 2 -q -k postgres \
		delta_platform_tests/scenarios delta_platform_tests/engine

bench: $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/engine_speed.py --db postgres --rows 2000000

.PHONY: install demo test bench
