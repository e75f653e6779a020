#!/usr/bin/env bash
# Set up, then run the harness's own tests and the cases on 2 workers (worksteal: an idle worker takes queued tests
# from the busy one, so the slow reproducer tests at the end do not run on one worker alone); exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -n 2 --dist worksteal -q -p no:cacheprovider "$@"
