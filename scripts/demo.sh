#!/usr/bin/env bash
# The main job: install missing system packages, then run a demo on the built-in lab.
# Without arguments: the live-migration experiment (`switchboard demo migration`).
# `bash scripts/demo.sh p4containerflow` runs the forwarding demo; other arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
if [ $# -eq 0 ]; then
  set -- migration
fi
cargo run --release -- demo "$@"
