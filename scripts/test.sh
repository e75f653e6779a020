#!/usr/bin/env bash
# Set up, then run the harness's own tests and the cases on 2 workers (worksteal: an idle worker takes queued tests
# from the busy one, so the slow reproducer tests at the end do not run on one worker alone); exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -n 2 --dist worksteal -q -p no:cacheprovider "$@"
# A target with an environment of its own runs its tests and its findings' reproducers inside it (built with uv on
# first use, then reused): there they run against the library they test, not skip as unavailable.
.venv/bin/moe-harness env python torchtitan -m pytest -n 2 --dist worksteal -q -p no:cacheprovider \
    tests/test_torchtitan_target.py tests/test_findings.py -k torchtitan
.venv/bin/moe-harness env python vllm -m pytest -n 2 --dist worksteal -q -p no:cacheprovider \
    tests/test_vllm_target.py tests/test_findings.py -k vllm
.venv/bin/moe-harness env python sglang -m pytest -n 2 --dist worksteal -q -p no:cacheprovider \
    tests/test_sglang_target.py tests/test_findings.py -k sglang
