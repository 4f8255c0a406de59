#!/usr/bin/env bash
# The test command: install missing system packages, then run every test of the
# workspace. Namespace tests run as root and say "SKIPPED: needs root" otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
cargo test --workspace --release "$@"
