#!/usr/bin/env bash
# Make sure this machine runs binaries of a foreign CPU architecture (default arm64 = aarch64) through
# QEMU user-mode emulation, for building and running a linux/arm64 image on an x86_64 host.
#
# Idempotent: mounts binfmt_misc if it is not (these sandboxes leave it unmounted), installs Debian's
# qemu-user-static and binfmt-support if missing, and enables the qemu-<arch> handler. The handler has
# the F flag (Debian registers it "fix-binary"): the kernel keeps the interpreter open, so it also runs
# inside containers and chroots that have no QEMU of their own. Needs root, except when all is in place.
#
# Usage: ensure_binfmt.sh [DEBIAN_ARCH]   (arm64 only is tried; the QEMU name of arm64 is aarch64)
set -euo pipefail

log() { echo "ensure_binfmt: $*" >&2; }

arch="${1:-arm64}"
case "$arch" in
    arm64) qemu=aarch64 ;;
    *) log "unsupported architecture '$arch' (only arm64)"; exit 2 ;;
esac
handler="/proc/sys/fs/binfmt_misc/qemu-$qemu"

if [ -f "$handler" ] && head -n 1 "$handler" | grep -qx enabled && grep -q '^flags: .*F' "$handler"; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "running $arch binaries needs the qemu-$qemu binfmt handler, and installing it needs root"
    exit 1
fi
if [ ! -f /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -f "/usr/share/binfmts/qemu-$qemu" ] || ! command -v update-binfmts >/dev/null 2>&1; then
    log "installing qemu-user-static and binfmt-support (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq qemu-user-static binfmt-support >&2 \
        || { apt-get update -qq >&2 && apt-get install -y -qq qemu-user-static binfmt-support >&2; }
fi
update-binfmts --enable "qemu-$qemu" >&2 || true
if ! grep -q '^flags: .*F' "$handler" 2>/dev/null; then
    log "the qemu-$qemu handler is not registered with the F (fix-binary) flag: containers cannot use it"
    exit 1
fi
log "qemu-$qemu handler enabled ($(sed -n 's/^interpreter //p' "$handler"))"
