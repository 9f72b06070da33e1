# Every install step lives here, so a clean clone needs nothing but Python 3.11, Java 17, Maven and Rust (cargo,
# with the C compiler it links with, which also builds the core's allocator, mimalloc).
PYTHON ?= python3
# rustup's cargo, where it installs it, even when the caller's PATH was not set up by a login shell
export PATH := $(HOME)/.cargo/bin:$(PATH)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint unit bench services services-stop clean system-deps dashboards image wheel helm

# The compiled core (core/, Rust through PyO3) is built by the install, with rustup's cargo.
$(STAMP): pyproject.toml core/Cargo.toml core/Cargo.lock $(wildcard core/src/*.rs)
	@command -v cargo >/dev/null || { echo "the compiled core (core/) needs Rust's cargo 1.85 or newer: https://rustup.rs" >&2; exit 1; }
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
	cargo fmt --manifest-path core/Cargo.toml --check
	cargo clippy --quiet --manifest-path core/Cargo.toml --release -- -D warnings

unit: venv
	$(PY) -m pytest -q -m "not kafka and not redis and not browser and not container"

test: venv system-deps helm lint
	$(PY) -m pytest -q

# deploy/dashboards/sms-pumping-detector.json from its code (a test checks the committed file is current).
dashboards: venv
	$(PY) deploy/dashboards/detector_dashboard.py

# The image with podman, on a Debian base made by mmdebstrap (cached in ~/.cache/sms-pumping-detector).
image: venv system-deps
	bash scripts/image.sh build $(IMAGE)

# The project's wheel with its compiled core, in dist/ (what the image installs).
wheel: venv
	bash scripts/image.sh wheel

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out .cache core/target dist detector/_core*.so
