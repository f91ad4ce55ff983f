#!/usr/bin/env bash
# Provide a Python 3.11 base image for docker/Dockerfile for one platform and
# print its name on stdout (the only thing printed on stdout; messages go to
# stderr).
#
# 1. If BASE_IMAGE (default python:3.11-slim) is present locally for PLATFORM, use it.
# 2. Else try to pull it for PLATFORM (bounded by PULL_TIMEOUT seconds).
# 3. Else (air-gapped: no registry) use or build FALLBACK_IMAGE
#    (default seg-base:bookworm-py311, seg-base:bookworm-py311-arm64 for
#    linux/arm64): a minimal Debian bookworm made with debootstrap
#    --variant=minbase plus Debian's python3.11 (no pip, no venv, no
#    compilers), slimmed and brought in with a one-step `docker build`. It is built once
#    and reused while it exists (FORCE_BASE=1 rebuilds it). A foreign platform
#    (linux/arm64 on x86_64) is bootstrapped through QEMU user-mode emulation
#    (docker/ensure_binfmt.sh).
#
# Needs a Docker daemon (see docker/ensure_dockerd.sh); step 3 needs root and
# debootstrap (installed with apt-get if missing) and a Debian mirror: by
# default the one this machine's apt uses for bookworm (so a local mirror just
# works), else deb.debian.org.
#
# Env: PLATFORM (linux/amd64 or linux/arm64; default: this machine's),
#      BASE_IMAGE, FALLBACK_IMAGE, PULL_TIMEOUT (default 60), FORCE_BASE,
#      DEBIAN_MIRROR (default: this machine's apt source), SKIP_PULL=1.
set -euo pipefail

log() { echo "make_base_image: $*" >&2; }

SUITE=bookworm
HOST_ARCH="$(dpkg --print-architecture 2>/dev/null || { [ "$(uname -m)" = aarch64 ] && echo arm64 || echo amd64; })"
PLATFORM="${PLATFORM:-linux/$HOST_ARCH}"
ARCH="${PLATFORM#linux/}"   # Debian's and Docker's name: amd64, arm64
case "$ARCH" in amd64|arm64) ;; *) log "unsupported platform '$PLATFORM' (linux/amd64 or linux/arm64)"; exit 2 ;; esac
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
if [ "$ARCH" = amd64 ]; then default_fallback=seg-base:bookworm-py311; else default_fallback="seg-base:bookworm-py311-$ARCH"; fi
FALLBACK_IMAGE="${FALLBACK_IMAGE:-$default_fallback}"
PULL_TIMEOUT="${PULL_TIMEOUT:-60}"

# The Debian mirror this machine's apt takes bookworm from (a local mirror or proxy included).
machine_mirror() {
    command -v apt-get >/dev/null 2>&1 || return 0
    apt-get indextargets --format '$(REPO_URI)' "Release: $SUITE" "Identifier: Packages" 2>/dev/null \
        | head -n 1 | sed 's:/*$::'
}
if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR="$(machine_mirror)"
    DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi

# An image that exists locally and is built for ARCH.
have_image() { [ "$(docker image inspect -f '{{.Architecture}}' "$1" 2>/dev/null)" = "$ARCH" ]; }

if [ "${FORCE_BASE:-0}" != "1" ]; then
    if have_image "$BASE_IMAGE"; then
        log "using local base image $BASE_IMAGE"
        echo "$BASE_IMAGE"
        exit 0
    fi
    if [ "${SKIP_PULL:-0}" != "1" ]; then
        log "trying to pull $BASE_IMAGE for $PLATFORM (timeout ${PULL_TIMEOUT}s)..."
        if timeout "$PULL_TIMEOUT" docker pull -q --platform "$PLATFORM" "$BASE_IMAGE" >/dev/null 2>&1 \
            && have_image "$BASE_IMAGE"; then
            log "pulled $BASE_IMAGE"
            echo "$BASE_IMAGE"
            exit 0
        fi
        log "cannot pull $BASE_IMAGE (no registry reachable?)"
    fi
    if have_image "$FALLBACK_IMAGE"; then
        log "using the cached debootstrap base $FALLBACK_IMAGE"
        echo "$FALLBACK_IMAGE"
        exit 0
    fi
fi

if [ "$(id -u)" -ne 0 ]; then
    log "building $FALLBACK_IMAGE with debootstrap needs root"
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq debootstrap >&2
fi

if [ "$ARCH" != "$HOST_ARCH" ]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/ensure_binfmt.sh" "$ARCH"   # debootstrap's second stage runs $ARCH code
fi

ROOTFS="$(mktemp -d /tmp/seg-base-rootfs.XXXXXX)"
cleanup() { rm -rf "$ROOTFS" "$ROOTFS.context"; }
trap cleanup EXIT

log "building $FALLBACK_IMAGE: debootstrap $SUITE $ARCH minbase + python3.11 from $DEBIAN_MIRROR into $ROOTFS (a few minutes; longer emulated)..."
# python3.11-minimal + libpython3.11-stdlib is Debian's python3.11 without
# the mime/tzdata extras; no pip: wheels are installed in a build stage with
# pip run from its own wheel (see docker/Dockerfile).
debootstrap --variant=minbase --arch="$ARCH" \
    --include=python3.11-minimal,libpython3.11-stdlib \
    "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$ROOTFS.log" 2>&1 || {
    log "debootstrap failed; last lines of $ROOTFS.log:"
    tail -n 30 "$ROOTFS.log" >&2
    exit 1
}
rm -f "$ROOTFS.log"

# Commands `python` and `python3` as in python:3.11-slim.
ln -sf python3.11 "$ROOTFS/usr/bin/python3"
ln -sf python3.11 "$ROOTFS/usr/bin/python"

# Slim down: apt lists and caches, docs, man pages, locales, logs.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
    "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/usr/share/lintian "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
# Byte-compile the standard library once, so no container has to.
chroot "$ROOTFS" /usr/bin/python3.11 -m compileall -q -j 0 /usr/lib/python3.11 >/dev/null 2>&1 || true
chmod 1777 "$ROOTFS/tmp"
chmod 755 "$ROOTFS"   # mktemp made it 0700: / must be readable by any --user
# Leave an empty sources.list pointing at the mirror so apt works if needed.
echo "deb $DEBIAN_MIRROR $SUITE main" >"$ROOTFS/etc/apt/sources.list"

log "bringing the root filesystem in as $FALLBACK_IMAGE ($PLATFORM)..."
# A one-step build FROM scratch rather than `docker import`: import records the daemon's own architecture
# whatever --platform says (seen with Docker 28), and an arm64 root filesystem labelled amd64 is not found
# by `docker run --platform linux/arm64`.
CONTEXT="$ROOTFS.context"
mkdir -p "$CONTEXT"
tar --numeric-owner -C "$ROOTFS" -cf "$CONTEXT/rootfs.tar" .
cat >"$CONTEXT/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
DOCKERFILE
docker build -q --platform "$PLATFORM" --network none \
    --label "org.opencontainers.image.description=debootstrap $SUITE $ARCH minbase + python3.11 (seg make_base_image.sh)" \
    -t "$FALLBACK_IMAGE" "$CONTEXT" >/dev/null
rm -rf "$CONTEXT"
have_image "$FALLBACK_IMAGE" || { log "$FALLBACK_IMAGE was not built for $ARCH"; exit 1; }
SIZE="$(docker image inspect -f '{{.Size}}' "$FALLBACK_IMAGE")"
log "built $FALLBACK_IMAGE from debootstrap ($((SIZE / 1000000)) MB) because $BASE_IMAGE was unavailable"
echo "$FALLBACK_IMAGE"
