# Every install step lives here, so a clean clone needs nothing but Python 3.11, Java 17 and Maven.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint unit bench services services-stop clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the integration tests use: redis-server, kcat, chromium. Skipped when already present.
system-deps:
	@bash scripts/system-deps.sh

demo: venv
	$(PY) -m detector demo

lint: venv
	$(VENV)/bin/ruff check detector tests bench
	$(VENV)/bin/ruff format --check detector tests bench
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -q -m "not kafka and not redis and not browser"

test: venv system-deps lint
	$(PY) -m pytest -q

bench: venv system-deps
	$(PY) -m bench $(BENCH)

services: venv system-deps
	$(PY) -m detector.testing.services up

services-stop: venv
	$(PY) -m detector.testing.services down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out .cache
