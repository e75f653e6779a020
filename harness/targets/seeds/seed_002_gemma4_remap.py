"""Seed 002 (vLLM PR 41206): the Gemma4 expert weight-name remap to `.moe.experts.N.`."""

from __future__ import annotations

import re

from reference.checkpoint import KeySchema

_TARGET = r".moe.experts.\1."


def remap_buggy(name: str) -> str:
    """Before the fix: every `.experts.N.` gains `.moe`, also where it already has it."""
    return re.sub(r"\.experts\.(\d+)\.", _TARGET, name)


def remap_lookahead(name: str) -> str:
    """The regex as one summary of the fix quotes it: a look-ahead, which guards nothing."""
    return re.sub(r"(?!\.moe)\.experts\.(\d+)\.", _TARGET, name)


def remap_fixed(name: str) -> str:
    """The merged fix: a negative look-behind skips keys that already carry `.moe`."""
    return re.sub(r"(?<!\.moe)\.experts\.(\d+)\.", _TARGET, name)


# Gemma4 checkpoints put experts on the layer; NVFP4/AWQ exports already carry `.moe`.
ACCEPTS = (
    KeySchema(prefix="model.language_model.", block="", layout="per_expert", names="proj"),
    KeySchema(prefix="model.language_model.", block="moe", layout="per_expert", names="proj"),
)
PRODUCES = KeySchema(prefix="model.language_model.", block="moe", layout="per_expert", names="proj")
