"""The `transformers` target runs the block checks over real blocks, and skips unmodelled ones with the reason."""

from __future__ import annotations

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import get_family
from harness.targets import load_target
from harness.verdict import Status

# One family per expert layout: concatenated [E,2I,H], transposed + interleaved with biases, transposed.
FAMILIES = ("qwen2_moe", "gpt_oss", "llama4_text")


@pytest.mark.parametrize("check", ["block-parity", "functional-call"])
@pytest.mark.parametrize("family", FAMILIES)
def test_real_blocks_pass(check: str, family: str) -> None:
    verdict = run_case(CHECKS[check], load_target("transformers"), get_family(family), max_examples=3)
    assert verdict.status == Status.PASS, verdict


def test_unmodelled_family_is_skipped_with_its_reason() -> None:
    verdict = run_case(CHECKS["block-parity"], load_target("transformers"), get_family("phimoe"))
    assert verdict.status == Status.SKIP and "sparsemixer" in verdict.message
