#!/usr/bin/env bash
# One entry point for a fresh clone:
#   scripts/dev.sh demo    set up (if needed) and run the offline demo job
#   scripts/dev.sh test    set up (if needed) and run the whole test suite
#   scripts/dev.sh setup   only create/refresh the virtual environment
# The venv lives in .venv (override with AUTOFT_VENV). torch and torchvision are installed first, as a
# matching pinned pair (timm and open_clip import torchvision, which must be built for the same torch), so
# pip never resolves them on its own; set AUTOFT_TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${AUTOFT_VENV:-.venv}
TORCH_SPEC=${AUTOFT_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
PYTHON=${PYTHON:-python3}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "Python >= 3.11 is required ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }
        "$PYTHON" -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    stamp="$VENV/.autoft-installed"
    want="$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    python -m pip install --quiet --disable-pip-version-check --upgrade pip
    if ! python -c 'import torch, torchvision' 2>/dev/null; then
        echo "installing $TORCH_SPEC" >&2
        # shellcheck disable=SC2086 # the spec is a list of requirements
        python -m pip install --quiet --disable-pip-version-check $TORCH_SPEC
    fi
    echo "installing autoft-service and its dependencies" >&2
    python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
    echo "$want" > "$stamp"
}

cmd=${1:-}
shift || true
case "$cmd" in
    setup) setup ;;
    demo) setup; exec autoft demo "$@" ;;
    test)
        setup
        # the report's browser test renders it in headless Chromium (Debian's package)
        if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            echo "installing chromium for the report browser test" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        fi
        ruff check autoft_service workers tests benchmarks
        python -m mypy  # the files are configured in pyproject.toml ([tool.mypy])
        exec python -m pytest -q "$@"
        ;;
    *) echo "usage: scripts/dev.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
