#!/bin/sh
# Installs the system packages the test suite needs. Idempotent; does nothing it
# need not do. Only root can install: others get a note of what is missing.
set -eu
need=""
command -v openssl >/dev/null 2>&1 || need="$need openssl"
if [ -z "$need" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install-system-deps: not root; please install:$need" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need
