#!/bin/sh
# `serve` in seg:latest (installed as /usr/local/bin/serve): seg-serve, the interactive back-end of
# napari-nninteractive and SlicerNNInteractive, on port 1527 of every interface of the container:
#   docker run --rm -p 127.0.0.1:1527:1527 seg:latest serve [seg-serve options]
# -p 127.0.0.1:... publishes the port on this machine's loopback only. Options go to seg-serve (--api-key KEY
# or -e SEG_SERVE_API_KEY=KEY, --threads N, --precision P, --max-sessions N, --modality MR; a later --host
# replaces this one). Without a key seg-serve warns that it listens beyond loopback: inside a container it
# has to, and the -p mapping decides who reaches it. POSIX sh.
set -eu
cd /workspace
SEG_SERVE_CONTAINER=1 exec python3 -m serve --host 0.0.0.0 "$@"
