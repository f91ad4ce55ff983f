#!/usr/bin/env bash
# One entry point for everything on the host. Usage: ./build.sh [setup|export|demo|test|unit|image|worker-image|bench]
#   setup   make .venv with the pinned build/test dependencies and this project installed in editable mode
#           (console scripts seg-predict, seg-score, seg-time in .venv/bin; idempotent)
#   export  setup + export the models to OpenVINO IR in models/ir (LiteMedSAM always; EfficientViT-SAM
#           when its checkpoints are in --weights DIR / $WEIGHTS_DIR, verified against the manifest)
#   demo    export + make the demo cases in demo/ + segment them + score them (the README's main job)
#   test    export + ruff + mypy + the Docker images (amd64, and arm64 unless SEG_ARM_TESTS=0) + the whole test
#           suite (the README's test command; CI runs it)
#   unit    setup + the unit tests only (no export, no Docker: under a minute)
#   image   export + build the Docker image seg:latest (starts a Docker daemon if none runs);
#           image --platform linux/arm64 builds seg:arm64 for Arm (Apple silicon, Graviton) under QEMU
#   worker-image  image + seg-worker:latest = seg:latest plus Dask, for --scheduler (docs/scale-out.md)
#   bench   export + the benchmark (OpenVINO vs the PyTorch baseline) on the demo and dev cases
# INT8_RECIPE=qat makes the INT8 LiteMedSAM encoder by quantisation-aware fine-tuning (~30 min on 2 cores)
# rather than post-training quantisation (ptq, the default; README "Precision").
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
WEIGHTS_DIR="${WEIGHTS_DIR:-$ROOT/weights}"
INT8_RECIPE="${INT8_RECIPE:-ptq}"  # qat: the INT8 encoder fine-tuned towards FP32 (~30 min more; README)

say() { printf '[build] %s\n' "$*" >&2; }

# Fail early, in one line, when the disk cannot hold what comes next; pip and Docker otherwise stop
# half-way with "No space left on device" and leave a broken venv or layer behind.
need_space() {  # need_space GIB DIR WHAT
  local free_kib
  free_kib=$(df -Pk "$2" | awk 'NR == 2 {print $4}')
  if (( free_kib < $1 * 1024 * 1024 )); then
    say "ERROR: $3 needs about $1 GiB free on $2's disk; only $((free_kib / 1024 / 1024)) GiB is free"
    exit 1
  fi
}

setup() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(cat requirements.txt requirements-build.txt requirements-serve.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [[ -x "$PY" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  say "setting up $VENV (pinned build and test dependencies; torch is build-time only)"
  # torch 2.14.1 with the torchvision that timm needs is a CUDA build: about 6.5 GiB in the venv.
  [[ -x "$PY" ]] || need_space 8 "$ROOT" "the build venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
  # Only the stardist wheel's bundled demo image is used; its deep-learning deps are not needed.
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps stardist==0.9.2
  # The project itself, editable (nnU-Net's way): console scripts, and imports from anywhere.
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
  echo "$want" > "$stamp"
}

export_models() {
  setup
  "$PY" -m models.export.build_all --out "$ROOT/models/ir" --weights "$WEIGHTS_DIR" --int8-recipe "$INT8_RECIPE"
}

demo() {
  export_models
  "$PY" -m evaluation.demo_cases --out "$ROOT/demo"
  rm -rf "$ROOT/demo/outputs"
  set +e
  "$PY" predict.py -i "$ROOT/demo/inputs" -o "$ROOT/demo/outputs"
  local status=$?
  set -e
  "$PY" -m evaluation.compute_metrics -s "$ROOT/demo/outputs" -g "$ROOT/demo/gts" -o "$ROOT/demo/metrics.csv" \
    --efficiency "$ROOT/demo/outputs/efficiency.csv"
  say "demo outputs in demo/outputs, scores in demo/metrics.csv"
  return $status
}

lint() {
  "$VENV/bin/ruff" check .
  "$VENV/bin/mypy"  # the runtime: predict.py, router/, models/ (pyproject.toml [tool.mypy])
}

run_tests() {
  export_models
  lint
  if [[ "${SEG_DOCKER_TESTS:-auto}" != "0" ]] && [[ -f docker/build_image.sh ]]; then
    if [[ "$(id -u)" == 0 ]] || docker info >/dev/null 2>&1; then
      build_image || { say "Docker image build failed"; return 1; }
      if [[ "${SEG_ARM_TESTS:-1}" != "0" ]]; then
        build_image --platform linux/arm64 || { say "Docker arm64 image build failed"; return 1; }
      fi
    else
      say "not root and no Docker daemon: the Docker tests will be skipped"
    fi
  fi
  # The slowest tests in the log: CI has 40 minutes on an idle machine (.ci/run), and this says where they go.
  "$PY" -m pytest -q -rs --durations=15 "$@"
}

unit_tests() {
  setup
  lint
  "$PY" -m pytest -q -rs -m "not integration" "$@"
}

build_image() {
  export_models
  need_space 6 /var/lib "the Docker image build (vfs storage copies every layer)"
  bash docker/build_image.sh "$@"
}

bench() {
  export_models
  "$PY" -m evaluation.demo_cases --out "$ROOT/demo"
  "$PY" -m benchmarks "$@"
}

while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --weights) WEIGHTS_DIR=$(realpath "$2"); shift 2 ;;
    *) break ;;
  esac
done
command=${1:-demo}
shift || true
case "$command" in
  setup) setup ;;
  export) export_models ;;
  demo) demo ;;
  test) run_tests "$@" ;;
  unit) unit_tests "$@" ;;
  image) build_image "$@" ;;
  worker-image) build_image && bash docker/build_worker_image.sh ;;
  bench) bench "$@" ;;
  *) echo "usage: ./build.sh [--weights DIR] [setup|export|demo|test|unit|image|worker-image|bench]" >&2; exit 2 ;;
esac
