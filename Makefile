# Sternway: `make demo` (one real run end to end), `make test` (the whole suite) and `make bench`
# (Sternway against a bare Temporal SDK baseline; writes bench/results/ and takes ~15 minutes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest install clean bench browser fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,test]'
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

# The Web UI test drives Debian's Chromium, never a browser download. When it is missing, `make test`
# installs it with apt-get (as root, or through passwordless sudo) and says so; where it cannot,
# it says how, and the Web UI test fails with the same advice.
CHROMIUM ?= $(or $(STERNWAY_CHROMIUM),/usr/bin/chromium)
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
APT_LOG := /tmp/sternway-chromium-install.log

browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: Chromium is missing at $(CHROMIUM) and there is no apt-get to install it;" \
	    "install it, or set STERNWAY_CHROMIUM to a Chromium binary"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "make test: installing Debian's chromium for the Web UI test (apt-get install chromium)"; \
	  sh -c '$(APT_INSTALL)' >$(APT_LOG) 2>&1 || { cat $(APT_LOG); exit 1; }; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "make test: installing Debian's chromium for the Web UI test (sudo apt-get install chromium)"; \
	  sudo sh -c '$(APT_INSTALL)' >$(APT_LOG) 2>&1 || { cat $(APT_LOG); exit 1; }; \
	else \
	  echo "make test: Chromium is missing at $(CHROMIUM); install it as root:" \
	    "apt-get install -y chromium"; \
	fi

test: browser lint pytest

# The long property run of tests/test_property.py: 5,000 generated runs (STERNWAY_FUZZ_SEED picks
# other ones). `make test` runs 500 of them.
fuzz: $(STAMP)
	STERNWAY_FUZZ_RUNS=$${STERNWAY_FUZZ_RUNS:-5000} $(BIN)/pytest -m fuzz -s -p no:logging tests/test_property.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sternway .pytest_cache .mypy_cache .ruff_cache
