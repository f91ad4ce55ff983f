#!/bin/sh
# Challenge entry point, run inside seg:latest as `sh predict.sh` (WORKDIR /workspace):
#   docker container run -m 8G --rm -v $PWD/inputs/:/workspace/inputs/ \
#       -v $PWD/outputs/:/workspace/outputs/ seg:latest /bin/bash -c "sh predict.sh"
# Segments every .npz case in /workspace/inputs into /workspace/outputs. Extra arguments go to
# predict.py. POSIX sh: no bashisms.
set -eu
cd "$(dirname "$0")"
exec python3 predict.py -i /workspace/inputs -o /workspace/outputs "$@"
