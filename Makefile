# kedge -- quick start: `make up` (local cluster) and `make test` (whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kedge-installed

.PHONY: up test lint venv system-deps release clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cloud,test]'
	touch $(STAMP)

venv: $(STAMP)

# Starts the embedded cluster (cloud + edge-1 + edge-2) in the foreground; state in ./.kedge-up/.
up: venv
	$(VENV)/bin/kedge up --data-dir ./.kedge-up

# System packages the tests need (mosquitto, kubectl, ...) when run as root.
system-deps: venv
	sh tests/install-system-deps.sh $(VENV)

# ruff over the tree and mypy --strict over the pure cores (configured in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

test: venv system-deps lint
	PATH="$(CURDIR)/$(VENV)/bin:$(PATH):/usr/sbin" $(PY) -m pytest -q

# Reproducible release: sdist, wheel, SBOM, SHA256SUMS and provenance in dist/.
release: venv
	$(PY) -m kedge.release build --out dist

clean:
	rm -rf $(VENV) .kedge-up dist build .pytest_cache
