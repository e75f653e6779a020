#!/usr/bin/env bash
# Create .venv and install moe-harness with every pin from constraints.txt (torch 2.13.0 CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
