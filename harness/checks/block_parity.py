"""block-parity: a target's MoE block equals the reference block holding the same weights.

The target's block exports its tensors under the reference names (`reference_state()`) and its router
logits (`router_logits(x)`); the reference block is loaded strictly from that export and fed the same
logits, so a difference is in routing weights, experts, activation, shared experts or how they combine. A block
whose experts compute in a narrower dtype (`BlockCap.compute_dtype`) is held to that dtype's tolerance, its rtol
applied to the size of the terms the output sums.
"""

from __future__ import annotations

import torch

from harness.assertions import assert_close, assert_close_to_terms
from harness.checks.base import Check, call_target
from harness.checks.output_terms import block_terms
from harness.families import Family
from harness.strategies.block_inputs import BlockInput, block_inputs
from harness.targets.base import BlockCap
from harness.tolerances import tolerance_for
from harness.verdict import not_applicable
from reference.moe import MoEBlock


def check_block_parity(block_cap: BlockCap, family: Family, example: BlockInput) -> None:
    spec = family.spec
    block = call_target("build block", block_cap.build, spec, example.seed)
    state = call_target("block.reference_state()", block.reference_state)
    ref = MoEBlock(spec)
    call_target("loading the block's exported tensors into the reference block", ref.load_state_dict, state)
    x = example.hidden_states(spec.hidden_size)
    with torch.no_grad():
        got = call_target("block(x)", block, x, returns=torch.Tensor)
        logits = call_target("block.router_logits(x)", block.router_logits, x, returns=torch.Tensor)
        want = ref(x, router_logits=logits)
    where = f"{family.name} block output vs the reference block with its weights"
    tol = tolerance_for(block_cap.compute_dtype, family.tolerances)
    if block_cap.compute_dtype == torch.float32:
        assert_close(got, want, tol, where)
    else:
        with torch.no_grad():
            terms = block_terms(ref, x, logits)
        assert_close_to_terms(got, want, terms, tol, f"{where} (the block computes in {block_cap.compute_dtype})")


def builds_only_for(block_cap: BlockCap, family: Family, target_name: str) -> str | None:
    """Why a block capability limited to some families does not apply to `family`, or None."""
    if block_cap.families is not None and family.name not in block_cap.families:
        return not_applicable(f"{target_name} builds blocks only for {', '.join(block_cap.families)}")
    return None


BLOCK_PARITY: Check[BlockCap] = Check(
    name="block-parity",
    capability="block",
    summary="the block's output == the reference block loaded with its exported weights, on its router logits",
    draws=lambda block_cap, family: block_inputs(),
    holds=check_block_parity,
    describe=BlockInput.describe,
    excludes=builds_only_for,
)
