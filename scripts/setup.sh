#!/usr/bin/env bash
# Create .venv and install moe-harness with every pin from constraints.txt (torch 2.13.0, the CPU build), with uv.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
uv_pin=$(grep '^uv==' constraints.txt)
.venv/bin/uv --version 2>/dev/null | grep -q "${uv_pin#uv==}" ||
    .venv/bin/python -m pip install -q --disable-pip-version-check "$uv_pin"
# uv reads neither pip's config nor PIP_FIND_LINKS: hand it the wheel directories pip is told about (where the
# pinned CPU torch lies on this project's machines; the registry's torch is a CUDA build of several GB).
links=()
for link in $(PYTHONPATH=. .venv/bin/python -c 'from harness.environments.builder import find_links
print(" ".join(find_links()))'); do
    links+=(--find-links "$link")
done
.venv/bin/uv pip install --quiet --python .venv/bin/python -c constraints.txt "${links[@]}" -e ".[dev]"
