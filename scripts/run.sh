#!/usr/bin/env bash
# Set up, then run the main job: `moe-harness run` on the default targets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/moe-harness run "$@"
