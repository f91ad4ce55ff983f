#!/usr/bin/env bash
# Make sure a Docker daemon answers `docker info`.
#
# If one already does, do nothing. Otherwise (as root) install docker.io from
# Debian if dockerd is missing, start dockerd in the background with the
# settings this sandbox needs (no iptables, no default bridge: containers must
# run with --network none) and wait until it is ready. Idempotent.
#
# Storage driver: overlay2 where the kernel lets us mount an overlay here (a
# container then starts in ~0.4 s), else vfs (every create copies the whole
# image: 3-6 s per container for seg:latest). Force one with
# DOCKERD_STORAGE_DRIVER=vfs|overlay2. Images live per driver: after a switch,
# rebuild them.
#
# Env:
#   DOCKERD_STORAGE_DRIVER  auto (default), overlay2 or vfs
#   DOCKERD_LOG             where dockerd logs (default /tmp/dockerd.log)
#   DOCKERD_TIMEOUT         seconds to wait for the daemon (default 60)
set -euo pipefail

log() { echo "ensure_dockerd: $*" >&2; }

DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
DOCKERD_TIMEOUT="${DOCKERD_TIMEOUT:-60}"
DOCKERD_STORAGE_DRIVER="${DOCKERD_STORAGE_DRIVER:-auto}"

docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if docker_ok; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "no Docker daemon answers 'docker info', and starting one needs root (uid is $(id -u))."
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    log "dockerd not found: installing docker.io from Debian (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq docker.io >&2
fi

overlay_works() {
    local dir rc=1
    dir="$(mktemp -d /var/tmp/ensure_dockerd.XXXXXX)" || return 1
    mkdir -p "$dir/l" "$dir/u" "$dir/w" "$dir/m"
    if mount -t overlay overlay -o "lowerdir=$dir/l,upperdir=$dir/u,workdir=$dir/w" "$dir/m" 2>/dev/null; then
        umount "$dir/m" && rc=0
    fi
    rm -rf "$dir"
    return $rc
}

wait_ready() {  # $1: pid of the dockerd we started (empty: not ours)
    for _ in $(seq 1 "$DOCKERD_TIMEOUT"); do
        if docker_ok; then
            return 0
        fi
        if [ -n "$1" ] && ! kill -0 "$1" 2>/dev/null; then
            return 1  # our dockerd died
        fi
        sleep 1
    done
    return 1
}

start_dockerd() {  # $1: storage driver; prints the pid
    log "starting dockerd (storage $1, no iptables, no bridge; log: $DOCKERD_LOG)..."
    nohup dockerd --storage-driver="$1" --iptables=false --bridge=none \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $!
}

# A daemon may be starting already (another caller): wait for it rather than start a second one.
if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    log "dockerd (pid $(cat /var/run/docker.pid)) is running but not ready yet; waiting."
    if wait_ready ""; then
        log "dockerd is ready."
        exit 0
    fi
    log "dockerd did not become ready within ${DOCKERD_TIMEOUT}s; last lines of $DOCKERD_LOG:"
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    exit 1
fi
rm -f /var/run/docker.pid

driver="$DOCKERD_STORAGE_DRIVER"
if [ "$driver" = auto ]; then
    if overlay_works; then driver=overlay2; else driver=vfs; fi
fi
pid="$(start_dockerd "$driver")"
if ! wait_ready "$pid" && [ "$DOCKERD_STORAGE_DRIVER" = auto ] && [ "$driver" = overlay2 ]; then
    log "dockerd with overlay2 did not come up; falling back to vfs."
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f /var/run/docker.pid
    driver=vfs
    pid="$(start_dockerd vfs)"
    wait_ready "$pid" || true
fi
if docker_ok; then
    log "dockerd is ready (storage driver $driver)."
    exit 0
fi
log "dockerd did not become ready within ${DOCKERD_TIMEOUT}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 1
