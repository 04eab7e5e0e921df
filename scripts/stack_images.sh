#!/usr/bin/env bash
# Build the compose stack's images on a host that reaches no container registry, from Debian's packages:
#   autoft-local/debian:bookworm   `debootstrap --variant=minbase bookworm` imported as an image
#   autoft-local/python:3.11       Debian's Python 3.11 (+ venv, CA certificates, a `python` link)
#   autoft-local/postgres:15       Debian's PostgreSQL 15, with the entry point the stack relies on
#   autoft-local/prometheus:2      Debian's Prometheus
#   autoft-service:local           the app image (./Dockerfile) on autoft-local/python:3.11
# deploy/compose.local.yml points the stack at them (Grafana is left out: Debian does not package it).
# Every step is skipped or cached when its image is already there, so a second run takes seconds.
#
#   scripts/stack_images.sh            build what is missing
#   STACK_REBUILD_BASE=1 ...           debootstrap the Debian base again
#
# Inputs (environment):
#   DEBIAN_MIRROR      default http://deb.debian.org/debian
#   TORCH_SPEC         the app image's PyTorch requirements; default: the CPU torch wheel found in the local
#                      wheel store (with its torchvision), else the Dockerfile's default
#   STACK_WHEEL_STORE  a folder with a local PyPI mirror (pypi/simple, pypi-more/simple) and/or loose wheels
#                      (wheels/); default /opt. When present it is served on 127.0.0.1 to the build, which
#                      then uses the host's network; PyPI stays an extra index.
#   STACK_WHEEL_PORT   the loopback port it is served on (default 38671)
#   STACK_BUILD_CA     a CA bundle pip must trust inside the build (default: $PIP_CERT or pip's configured
#                      `cert`); copied into deploy/build-ca/ (git-ignored) for this build only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
DOCKER=${DOCKER:-docker}
export DOCKER_BUILDKIT=0   # the legacy builder: Debian's docker.io has no buildx
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
store=${STACK_WHEEL_STORE:-/opt}

log() { printf '[stack_images %s] %s\n' "$(date -u +%T)" "$*" >&2; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
build_log=${STACK_BUILD_LOG:-/tmp/autoft-stack-build.log}
build() {  # docker build ARGS..., its output in $build_log, the end of it shown if it fails
    "$DOCKER" build "$@" >"$build_log" 2>&1 || { tail -40 "$build_log" >&2; echo "build failed: $build_log" >&2; exit 1; }
}

# 1. The Debian base: debootstrap, then import the tree as an image.
if [ -n "${STACK_REBUILD_BASE:-}" ] || ! have_image autoft-local/debian:bookworm; then
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    tree=$(mktemp -d /var/tmp/autoft-debian.XXXXXX)
    trap 'rm -rf "$tree"' EXIT
    log "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$tree" "$mirror" >"$tree.log" 2>&1 \
        || { tail -20 "$tree.log" >&2; exit 1; }
    rm -f "$tree.log"
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
    tar -C "$tree" -c . | "$DOCKER" import - autoft-local/debian:bookworm >/dev/null
    rm -rf "$tree"
    trap - EXIT
fi

# 2. Python, PostgreSQL and Prometheus from Debian's packages (layers cached by the builder).
for spec in python:3.11 postgres:15 prometheus:2; do
    name=${spec%%:*}
    log "image autoft-local/$spec"
    build -t "autoft-local/$spec" -f "deploy/local/$name.Dockerfile" deploy/local
done

# 3. The app image, on the Debian-built Python.
args=(--build-arg BASE_IMAGE=autoft-local/python:3.11)
server_pid=
cleanup() {
    rm -f "$root/deploy/build-ca/ca-certificates.crt"
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

ca=${STACK_BUILD_CA:-${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}}
if [ -n "$ca" ] && [ -f "$ca" ]; then
    cp "$ca" deploy/build-ca/ca-certificates.crt
    args+=(--build-arg PIP_CERT=/tmp/build-ca/ca-certificates.crt)
fi

torch_spec=${TORCH_SPEC:-}
if [ -d "$store/pypi/simple" ] || [ -d "$store/wheels" ]; then
    # A fixed port: the index URLs are build args, and a changed build arg invalidates the builder's cache.
    port=${STACK_WHEEL_PORT:-38671}
    python3 -m http.server --bind 127.0.0.1 --directory "$store" "$port" >/dev/null 2>&1 &
    server_pid=$!
    url=http://127.0.0.1:$port
    for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('$url/')" 2>/dev/null && break; sleep 0.1; done
    args+=(--network host)
    if [ -d "$store/pypi/simple" ]; then
        # PyPI stays an extra index for what the mirror lacks (pip takes the best match of all indexes).
        extra=https://pypi.org/simple
        [ -d "$store/pypi-more/simple" ] && extra="$url/pypi-more/simple $extra"
        args+=(--build-arg "PIP_INDEX_URL=$url/pypi/simple" --build-arg "PIP_EXTRA_INDEX_URL=$extra")
    fi
    if [ -d "$store/wheels" ]; then
        args+=(--build-arg "PIP_FIND_LINKS=$url/wheels/")
        # A CPU build of torch in the store: the image then carries no CUDA libraries (GBs smaller).
        cpu_wheel=$(find "$store/wheels" -maxdepth 1 -name 'torch-*+cpu-cp311-*.whl' | sort -V | tail -1)
        if [ -z "$torch_spec" ] && [ -n "$cpu_wheel" ]; then
            version=$(basename "$cpu_wheel" | cut -d- -f2)            # e.g. 2.13.0+cpu
            minor=$(echo "$version" | cut -d. -f2)
            vision=$(find "$store" -name "torchvision-0.$((minor + 15)).*+cpu-cp311-*.whl" | sort -V | tail -1)
            if [ -n "$vision" ]; then   # torchvision 0.(N+15) is built for torch 2.N
                torch_spec="torch==$version torchvision==$(basename "$vision" | cut -d- -f2)"
            else
                # PyPI's torchvision is built against the CUDA torch and fails to import next to a CPU one
                # ("operator torchvision::nms does not exist"); without a CPU build of it, leave out the two
                # adapters that need it (timm, open_clip). The stack and the demo task need neither.
                torch_spec="torch==$version"
                args+=(--build-arg "ADAPTER_EXTRAS=hf parquet")
                log "no CPU torchvision for torch $version in $store: the image leaves out the timm and clip extras"
            fi
        fi
    fi
fi
[ -n "$torch_spec" ] && args+=(--build-arg "TORCH_SPEC=$torch_spec")
log "image autoft-service:local (TORCH_SPEC: ${torch_spec:-the Dockerfile default})"
build -t autoft-service:local "${args[@]}" .
log "done"
