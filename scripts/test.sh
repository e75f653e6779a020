#!/usr/bin/env bash
# Set up, then run the harness's own tests and the cases on 2 workers; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -n 2 -q -p no:cacheprovider "$@"
