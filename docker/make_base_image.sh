#!/usr/bin/env bash
# Provide a Python 3.11 base image for docker/Dockerfile and print its name on
# stdout (the only thing printed on stdout; messages go to stderr).
#
# 1. If BASE_IMAGE (default python:3.11-slim) is present locally, use it.
# 2. Else try to pull it (bounded by PULL_TIMEOUT seconds).
# 3. Else (air-gapped: no registry) use or build FALLBACK_IMAGE
#    (default seg-base:bookworm-py311): a minimal Debian bookworm made with
#    debootstrap --variant=minbase plus Debian's python3.11 (no pip, no venv,
#    no compilers), slimmed and brought in with `docker import`. It is built
#    once and reused while it exists (FORCE_BASE=1 rebuilds it).
#
# Needs a Docker daemon (see docker/ensure_dockerd.sh); step 3 needs root and
# debootstrap (installed with apt-get if missing) and Debian's mirror.
#
# Env: BASE_IMAGE, FALLBACK_IMAGE, PULL_TIMEOUT (default 60), FORCE_BASE,
#      DEBIAN_MIRROR (default http://deb.debian.org/debian), SKIP_PULL=1.
set -euo pipefail

log() { echo "make_base_image: $*" >&2; }

BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
FALLBACK_IMAGE="${FALLBACK_IMAGE:-seg-base:bookworm-py311}"
PULL_TIMEOUT="${PULL_TIMEOUT:-60}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "${FORCE_BASE:-0}" != "1" ]; then
    if have_image "$BASE_IMAGE"; then
        log "using local base image $BASE_IMAGE"
        echo "$BASE_IMAGE"
        exit 0
    fi
    if [ "${SKIP_PULL:-0}" != "1" ]; then
        log "trying to pull $BASE_IMAGE (timeout ${PULL_TIMEOUT}s)..."
        if timeout "$PULL_TIMEOUT" docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
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

ROOTFS="$(mktemp -d /tmp/seg-base-rootfs.XXXXXX)"
cleanup() { rm -rf "$ROOTFS"; }
trap cleanup EXIT

log "building $FALLBACK_IMAGE: debootstrap $SUITE minbase + python3.11 into $ROOTFS (a few minutes)..."
# python3.11-minimal + libpython3.11-stdlib is Debian's python3.11 without
# the mime/tzdata extras; no pip: wheels are installed in a build stage with
# pip run from its own wheel (see docker/Dockerfile).
debootstrap --variant=minbase \
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

log "importing the root filesystem as $FALLBACK_IMAGE..."
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE minbase + python3.11 (seg make_base_image.sh)" \
    - "$FALLBACK_IMAGE" >/dev/null
SIZE="$(docker image inspect -f '{{.Size}}' "$FALLBACK_IMAGE")"
log "built $FALLBACK_IMAGE from debootstrap ($((SIZE / 1000000)) MB) because $BASE_IMAGE was unavailable"
echo "$FALLBACK_IMAGE"
