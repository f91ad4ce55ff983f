#!/usr/bin/env bash
# Build seg-worker:latest = seg:latest + Dask (docker/Dockerfile.worker). Run from the repository root
# after ./build.sh image. IMAGE=... and SEG_IMAGE=... override the tags; PYTHON the pip used to download.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-seg-worker:latest}"
SEG_IMAGE="${SEG_IMAGE:-seg:latest}"
WHEELHOUSE="docker/wheelhouse-worker"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
log() { printf '[worker-image] %s\n' "$*" >&2; }

docker image inspect "$SEG_IMAGE" >/dev/null 2>&1 || { log "no $SEG_IMAGE: run ./build.sh image first"; exit 1; }
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
stamp="$(cat docker/requirements-worker.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$WHEELHOUSE/.stamp" ] && [ "$(cat "$WHEELHOUSE/.stamp")" = "$stamp" ]; then
    log "wheelhouse $WHEELHOUSE is up to date (no download)"
else
    log "downloading the worker's wheels into $WHEELHOUSE..."
    tmp="$(mktemp -d docker/.wheelhouse-worker.XXXXXX)"
    trap 'rm -rf "$tmp"' EXIT
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
        --python-version 3.11 --implementation cp "${platforms[@]}" \
        -r docker/requirements-worker.txt pip -d "$tmp"
    cp docker/requirements-worker.txt "$tmp/"
    echo '*' >"$tmp/.gitignore"
    echo "$stamp" >"$tmp/.stamp"
    rm -rf "$WHEELHOUSE"
    mv "$tmp" "$WHEELHOUSE"
    trap - EXIT
fi
docker build --network none --build-arg "SEG_IMAGE=$SEG_IMAGE" -t "$IMAGE" -f docker/Dockerfile.worker .
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
base="$(docker image inspect -f '{{.Size}}' "$SEG_IMAGE")"
log "built $IMAGE: $((size / 1000000)) MB ($SEG_IMAGE: $((base / 1000000)) MB)"
