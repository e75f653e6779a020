"""The differential check's judgement, on runs whose sides are made here from the reference block itself: it passes
when both sides compute the block the checkpoint means, and names the side that does not (torch only)."""

from __future__ import annotations

import pytest
import torch

from harness.checks.differential import check_differential
from harness.families import get_family
from harness.strategies.block_inputs import BlockInput
from harness.targets.base import DifferentialCap, DifferentialRun
from harness.verdict import PropertyViolation
from reference.moe import MoEBlock, build_block

FAMILY = get_family("mixtral")
EXAMPLE = BlockInput(tokens=4, seed=3, scale=1.0)


def _cap(engine_scale: float = 1.0, transformers_scale: float | None = 1.0) -> DifferentialCap:
    """A capability whose sides are the reference block the checkpoint means, their outputs scaled."""
    written = build_block(FAMILY.spec, seed=7).state_dict()

    def run(family: str, seed: int, x: torch.Tensor) -> DifferentialRun:
        block = MoEBlock(FAMILY.spec)
        block.load_state_dict(written)
        with torch.no_grad():
            y = block(x)
        hf = None if transformers_scale is None else y * transformers_scale
        return DifferentialRun(y * engine_scale, hf, None if hf is not None else "KeyError: 'experts.0'", written)

    return DifferentialCap(run)


def test_both_sides_computing_what_the_checkpoint_means_pass() -> None:
    check_differential(_cap(), FAMILY, EXAMPLE)


@pytest.mark.parametrize(("cap", "side"), [(_cap(engine_scale=1.01), "engine"),
                                           (_cap(transformers_scale=0.99), "transformers"),
                                           (_cap(engine_scale=1.01, transformers_scale=0.99), "both"),
                                           (_cap(transformers_scale=None), "transformers")])
def test_the_side_that_differs_from_the_reference_is_named(cap: DifferentialCap, side: str) -> None:
    with pytest.raises(PropertyViolation) as caught:
        check_differential(cap, FAMILY, EXAMPLE)
    assert caught.value.details["side"] == side, caught.value
