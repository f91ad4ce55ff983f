#!/usr/bin/env bash
# Build the submission image (default seg:latest; seg:arm64 for --platform linux/arm64) without any
# registry:
#   1. make sure a Docker daemon runs          (docker/ensure_dockerd.sh), and for a foreign platform
#      that this machine runs its binaries through QEMU (docker/ensure_binfmt.sh)
#   2. make sure a Python 3.11 base image exists for the platform (docker/make_base_image.sh)
#   3. fill the platform's wheelhouse (docker/wheelhouse/ for amd64, docker/wheelhouse-arm64/ for arm64)
#      with the runtime wheels of requirements.txt and docker/requirements-serve.txt (seg-serve's) (pip
#      download on the host, Linux / CPython 3.11 binary wheels for the platform only; skipped while both
#      files are unchanged, so a second build needs no network at all)
#   4. docker build --platform P --network none -f docker/Dockerfile -t IMAGE .
# Usage: build_image.sh [--platform linux/amd64|linux/arm64]   (default: this machine's platform)
# The build context is cut down by .dockerignore to predict.py, router/, models/ (without
# models/export), serve/, docker/predict.sh, docker/serve.sh and docker/wheelhouse/.
#
# Env: PLATFORM (as --platform), IMAGE (default seg:latest, or seg:arm64 for arm64 on an amd64 host), BASE_IMAGE (see make_base_image.sh), PYTHON (host python with
#      pip; default .venv/bin/python, else python3), SEG_ALLOW_NO_IR=1 to build without models/ir,
#      SEG_BAKE_OV_CACHE=1 to bake OpenVINO's compiled-model cache into the image (saves ~0.2 s of
#      start-up with the bf16 default, +~56 MB, but only on a machine with the build machine's CPU
#      model; see docker/README.md),
#      BUILD_LOG (default /tmp/seg_docker_build.log).
set -euo pipefail

log() { echo "build_image: $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
while [ $# -gt 0 ]; do
    case "$1" in
        --platform) PLATFORM="$2"; shift 2 ;;
        --platform=*) PLATFORM="${1#--platform=}"; shift ;;
        *) log "unknown argument '$1' (usage: build_image.sh [--platform linux/amd64|linux/arm64])"; exit 2 ;;
    esac
done
HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || { [ "$(uname -m)" = aarch64 ] && echo arm64 || echo amd64; })"
PLATFORM="${PLATFORM:-linux/$HOST_ARCH}"
ARCH="${PLATFORM#linux/}"
case "$ARCH" in
    amd64) PIP_ARCH=x86_64 ;;
    arm64) PIP_ARCH=aarch64 ;;
    *) log "unsupported platform '$PLATFORM' (linux/amd64 or linux/arm64)"; exit 2 ;;
esac
export PLATFORM
# The host's own platform keeps the names it always had; a foreign one is named by its architecture.
if [ "$ARCH" = amd64 ]; then suffix=""; else suffix="-$ARCH"; fi
if [ "$ARCH" = amd64 ]; then default_image=seg:latest; else default_image="seg:$ARCH"; fi
IMAGE="${IMAGE:-$default_image}"
BUILD_LOG="${BUILD_LOG:-/tmp/seg_docker_build$suffix.log}"
WHEELHOUSE="docker/wheelhouse$suffix"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

for f in predict.py requirements.txt docker/requirements-serve.txt docker/Dockerfile docker/predict.sh docker/serve.sh; do
    [ -f "$f" ] || { log "missing $f"; exit 1; }
done
if ! ls models/ir/*.xml >/dev/null 2>&1; then
    if [ "${SEG_ALLOW_NO_IR:-0}" = "1" ]; then
        log "WARNING: models/ir/ has no exported IR; the image will not be able to segment."
    else
        log "models/ir/ has no exported IR: run './build.sh export' first (or SEG_ALLOW_NO_IR=1)."
        exit 1
    fi
fi

# 1. daemon (and QEMU for a foreign platform), 2. base image
bash docker/ensure_dockerd.sh
if [ "$ARCH" != "$HOST_ARCH" ]; then
    bash docker/ensure_binfmt.sh "$ARCH"
fi
BASE="$(bash docker/make_base_image.sh)"
log "base image: $BASE"

# 3. wheelhouse: binary wheels for the image's platform (glibc 2.36 in bookworm; pip >= 23 does not
# expand manylinux_2_36 to older tags by itself, so every tag is listed: openvino's aarch64 wheel is
# manylinux_2_35_aarch64, and manylinux2014_aarch64 alone finds only a 2023 release).
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_$PIP_ARCH"); done
platforms+=(--platform "manylinux2014_$PIP_ARCH")
if [ "$PIP_ARCH" = x86_64 ]; then platforms+=(--platform manylinux2010_x86_64 --platform manylinux1_x86_64); fi
stamp="$( (cat requirements.txt docker/requirements-serve.txt; echo "${platforms[*]}") | sha256sum | cut -d' ' -f1)"
if [ -f "$WHEELHOUSE/.stamp" ] && [ "$(cat "$WHEELHOUSE/.stamp")" = "$stamp" ] \
    && ls "$WHEELHOUSE"/pip-*.whl >/dev/null 2>&1; then
    log "wheelhouse $WHEELHOUSE is up to date (no download)"
else
    log "downloading runtime wheels into $WHEELHOUSE ($PYTHON -m pip download)..."
    tmp="$(mktemp -d "$ROOT/docker/.wheelhouse.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # pip itself (run from its wheel inside the build) comes along; it never reaches the image.
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version 3.11 --implementation cp "${platforms[@]}" \
        -r requirements.txt -r docker/requirements-serve.txt pip -d "$tmp"
    cp requirements.txt "$tmp/requirements.txt"
    cp docker/requirements-serve.txt "$tmp/requirements-serve.txt"
    echo '*' >"$tmp/.gitignore"   # never commit the wheelhouse
    echo "$stamp" >"$tmp/.stamp"
    rm -rf "$WHEELHOUSE"
    mv "$tmp" "$WHEELHOUSE"
    trap - EXIT
fi

# 4. the image (no network inside the build)
log "building $IMAGE ($PLATFORM) FROM $BASE..."
start=$(date +%s)
cache_arg=()
if [ "${SEG_BAKE_OV_CACHE:-0}" = "1" ]; then
    cache_arg=(--build-arg OV_CACHE_DIR=/workspace/.ov_cache)
    log "baking OpenVINO's compiled-model cache (valid on this CPU model only)"
fi
# The two build stages are tagged (<image>-build:deps, <image>-build:app) so that they stay as the
# build cache while older, now dangling images are pruned: vfs keeps a full copy of every layer.
# What run.json reports as the project's version and commit (the image holds neither a package nor a checkout).
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)"
commit="$(git rev-parse HEAD 2>/dev/null || true)"
if [ -n "$commit" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit-dirty"; fi
stage_repo="${IMAGE%%:*}-build"
: >"$BUILD_LOG"
for target in deps app final; do  # (final builds the untagged slim stage too)
    tag=("-t" "$stage_repo:$target$suffix")
    [ "$target" = final ] && tag=("-t" "$IMAGE")
    docker build --platform "$PLATFORM" --network none --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "WHEELHOUSE=$WHEELHOUSE" --build-arg "SEG_VERSION=$version" --build-arg "SEG_COMMIT=$commit" \
        "${cache_arg[@]}" \
        --target "$target" "${tag[@]}" -f docker/Dockerfile . >>"$BUILD_LOG" 2>&1 || {
        log "docker build (stage $target) failed; last lines of $BUILD_LOG:"
        tail -n 30 "$BUILD_LOG" >&2
        exit 1
    }
done
docker image prune -f >/dev/null
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
log "built $IMAGE ($PLATFORM) in $(( $(date +%s) - start ))s: $((size / 1000000)) MB uncompressed (base $BASE)"
