#!/usr/bin/env bash
# The main job: install missing system packages, then run the p4containerflow demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
cargo run --release -- demo "$@"
