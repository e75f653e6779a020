"""block-parity: a target's MoE block equals the reference block holding the same weights.

The target's block exports its tensors under the reference names (`reference_state()`) and its router
logits (`router_logits(x)`); the reference block is loaded strictly from that export and fed the same
logits, so a difference is in routing weights, experts, activation, shared experts or how they combine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.targets.base import Target
from harness.tolerances import assert_close, tolerance_for
from reference.moe import MoEBlock


@dataclass(frozen=True)
class BlockInput:
    tokens: int
    seed: int
    scale: float


def check_block_parity(target: Target, family: Family, case: BlockInput) -> None:
    assert target.block is not None
    spec = family.spec
    block = call_target("build block", target.block.build, spec, case.seed)
    state = call_target("block.reference_state()", block.reference_state)
    ref = MoEBlock(spec)
    call_target("loading the block's exported tensors into the reference block", ref.load_state_dict, state)
    x = torch.randn(case.tokens, spec.hidden_size, generator=torch.Generator().manual_seed(case.seed)) * case.scale
    with torch.no_grad():
        got = call_target("block(x)", block, x)
        want = ref(x, router_logits=call_target("block.router_logits(x)", block.router_logits, x))
    assert_close(got, want, tolerance_for(torch.float32, family.tolerances),
                 f"{family.name} block output vs the reference block with its weights")


def _applies(target: Target, family: Family) -> str | None:
    assert target.block is not None
    if target.block.families is not None and family.name not in target.block.families:
        return f"{target.name} builds blocks only for {', '.join(target.block.families)}"
    return None


BLOCK_PARITY = Check(
    name="block-parity",
    capability="block",
    summary="the block's output == the reference block loaded with its exported weights, on its router logits",
    strategy=lambda target, family: st.builds(BlockInput, tokens=st.integers(1, 16), seed=st.integers(0, 2**16),
                                              scale=st.sampled_from([0.5, 1.0, 4.0])),
    prop=check_block_parity,
    describe=lambda case: {"tokens": case.tokens, "seed": case.seed, "input_scale": case.scale},
    applies=_applies,
)
