#!/usr/bin/env bash
# Installs what the Makefile targets need on a fresh Debian/Ubuntu machine:
#   scripts/bootstrap.sh           uv (from PyPI) and the locked environment in .venv
#   scripts/bootstrap.sh test      ... plus Debian's dcmtk (storescu, findscu, ...) and
#                                  chromium (the browser tests drive /usr/bin/chromium
#                                  with Playwright; no browser is downloaded), nginx
#                                  (the multi-node recipe's proxy, run unprivileged) and
#                                  the OpenID provider the login tests use (npm
#                                  oidc-provider, run with the machine's Node.js >= 20)
#   scripts/bootstrap.sh bench     ... plus Debian's orthanc and orthanc-dicomweb
# Safe to run repeatedly; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export UV_PYTHON_DOWNLOADS=never

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
    echo "bootstrap: installing uv from PyPI" >&2
    # A fresh Debian/Ubuntu has no pip: install it when we can.
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3-pip >/dev/null
    fi
    # Debian 12 / Ubuntu 23.04 and later refuse even `pip install --user` (PEP 668,
    # "externally-managed-environment"); uv is one self-contained wheel without
    # dependencies, so putting it in ~/.local cannot break the system's packages.
    "$PYTHON" -m pip install --quiet --user uv 2>/dev/null \
        || "$PYTHON" -m pip install --quiet --user --break-system-packages uv \
        || "$PYTHON" -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")

stamp=.venv/.bootstrap-stamp
if [ ! -f "$stamp" ] || [ uv.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: syncing .venv from uv.lock" >&2
    "$UV" sync --frozen --python "$PYTHON" --quiet
    touch "$stamp"
fi

need_apt=()
mode=${1:-run}
if [ "$mode" = test ] || [ "$mode" = bench ]; then
    command -v storescu >/dev/null 2>&1 || need_apt+=(dcmtk)
    [ -x /usr/bin/chromium ] || need_apt+=(chromium)
    dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need_apt+=(fonts-dejavu-core)
    command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
    command -v npm >/dev/null 2>&1 || need_apt+=(npm)
    # nginx in front of the web nodes of the multi-node recipe (deploy/multinode)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
fi
if [ "$mode" = bench ]; then
    command -v Orthanc >/dev/null 2>&1 || need_apt+=(orthanc)
    dpkg -s orthanc-dicomweb >/dev/null 2>&1 || need_apt+=(orthanc-dicomweb)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Debian packages: ${need_apt[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need_apt[@]}" >/dev/null
    elif [ "${CI:-}" = true ]; then
        echo "bootstrap: missing ${need_apt[*]} and cannot install them (not root)" >&2
        exit 1
    else
        echo "bootstrap: warning: ${need_apt[*]} missing; interop tests will be skipped" >&2
    fi
fi

# The login tests' OpenID provider (tests/oidc_provider, from its package-lock.json).
if [ "$mode" = test ] && command -v npm >/dev/null 2>&1 \
    && [ ! -f tests/oidc_provider/node_modules/oidc-provider/package.json ]; then
    echo "bootstrap: installing the test OpenID provider (npm ci)" >&2
    (cd tests/oidc_provider && npm ci --no-audit --no-fund --loglevel=error) \
        || echo "bootstrap: warning: npm ci failed; the login tests will install it themselves" >&2
fi
