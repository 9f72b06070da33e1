# Every install step lives here, so a clean clone needs nothing but Python 3.11, Java 17 and Maven.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint unit bench services services-stop clean system-deps dashboards image helm

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: redis-server, kcat, chromium, podman, runc, mmdebstrap, prometheus (promtool).
# Skipped when already present.
system-deps:
	@bash scripts/system-deps.sh

demo: venv
	$(PY) -m detector demo

lint: venv
	$(VENV)/bin/ruff check detector tests bench
	$(VENV)/bin/ruff format --check detector tests bench
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -q -m "not kafka and not redis and not browser and not container"

test: venv system-deps helm lint
	$(PY) -m pytest -q

# deploy/dashboards/sms-pumping-detector.json from its code (a test checks the committed file is current).
dashboards: venv
	$(PY) deploy/dashboards/detector_dashboard.py

# The image with podman, on a Debian base made by mmdebstrap (cached in ~/.cache/sms-pumping-detector).
image: system-deps
	bash scripts/image.sh build $(IMAGE)

# Helm v3 for the chart tests: the one on PATH, or built once with `go install` (a few minutes).
helm:
	@bash scripts/helm.sh >/dev/null

bench: venv system-deps
	$(PY) -m bench $(BENCH)

services: venv system-deps
	$(PY) -m detector.testing.services up

services-stop: venv
	$(PY) -m detector.testing.services down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out .cache
