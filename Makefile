# Sternway: `make demo` (one real run end to end), `make test` (the whole suite) and `make bench`
# (Sternway against a bare Temporal SDK baseline; writes bench/results/ and takes ~15 minutes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest install clean bench fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sternway demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint pytest

# The long property run of tests/test_property.py: 5,000 generated runs (STERNWAY_FUZZ_SEED picks
# other ones). `make test` runs 500 of them.
fuzz: $(STAMP)
	STERNWAY_FUZZ_RUNS=$${STERNWAY_FUZZ_RUNS:-5000} $(BIN)/pytest -m fuzz -s -p no:logging tests/test_property.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sternway .pytest_cache .mypy_cache .ruff_cache
