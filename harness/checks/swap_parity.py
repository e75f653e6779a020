"""swap-parity: an engine's MoE, built in place of a transformers MoE block the way the engine swaps it in when it
trains or serves that model, computes what the block computes on the same weights.

The block is the transformers target's (the family's own code, every tensor seeded); the engine builds its module
from the block and its config and takes the block's weights through its own converter. A difference is in what
the engine read off the block or config (experts, top-k, score function, normalisation, scaling, groups, shared
experts), or in how its converter moved the weights. Where the engine exposes its routing, its weights per expert
are held to the block's at float32 first (routing runs in float32 whatever the experts compute in). The output's
tolerance is that of the engine's compute dtype, its rtol
applied to the size of the terms the output sums (an engine computing its experts in bf16 errs in proportion to
them, however much they cancel).
"""

from __future__ import annotations

import torch

from harness.assertions import assert_close, assert_close_to_terms
from harness.checks.base import Check, call_target
from harness.checks.output_terms import block_terms
from harness.families import Family
from harness.strategies.block_inputs import BlockInput, block_inputs
from harness.targets.base import SwapCap
from harness.tolerances import tolerance_for
from harness.verdict import not_applicable
from reference.moe import MoEBlock


def check_swap_parity(cap: SwapCap, family: Family, example: BlockInput) -> None:
    from harness.targets.transformers import build
    from harness.targets.transformers.tiny_model import text_config

    block = build(family.spec, example.seed)
    config = text_config(family.name)
    swapped = call_target("swap(block, config)", cap.swap, block, config, returns=torch.nn.Module)
    x = example.hidden_states(family.spec.hidden_size)
    ref = MoEBlock(family.spec)
    ref.load_state_dict(block.reference_state())
    with torch.no_grad():
        logits = block.router_logits(x)
        if cap.route is not None:
            _check_routing(cap, family, swapped, x, ref.routing(logits))
        want = block(x)
        got = call_target("swapped(x)", swapped, x, returns=torch.Tensor)
        terms = block_terms(ref, x, logits)
    assert_close_to_terms(got, want, terms, tolerance_for(cap.compute_dtype, family.tolerances),
                          f"{family.name}: the swapped-in MoE ({cap.compute_dtype}) vs the transformers block it replaced")


def _check_routing(cap: SwapCap, family: Family, swapped: torch.nn.Module, x: torch.Tensor,
                   want: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The swapped module's routing weights per expert equal the family's (the reference's on the block's own
    logits, which block-parity holds to the block), at float32."""
    assert cap.route is not None
    weights, ids = call_target("route(swapped, x)", cap.route, swapped, x)
    experts = family.spec.num_experts
    per_expert = torch.zeros(x.shape[0], experts, dtype=torch.float64)
    expected = torch.zeros_like(per_expert)
    per_expert.scatter_add_(1, ids.long(), weights.double())
    expected.scatter_add_(1, want[1].long(), want[0].double())
    assert_close(per_expert, expected, tolerance_for(torch.float32, family.tolerances),
                 f"{family.name}: the swapped-in MoE's routing weights per expert [T, E] vs the block's")


def no_block_reason(family: str) -> str | None:
    """Why transformers has no block of the family to take from (its own reason, or its model does not build, a
    transformers finding), or None."""
    from harness.targets.transformers.blocks import skip_reason
    from harness.targets.transformers.tiny_model import ModelBuildFailed

    try:
        return skip_reason(family)
    except ModelBuildFailed as exc:
        return not_applicable(f"no {family} block to take: the installed transformers cannot build its model "
                              f"({exc}; the transformers target reports it)")


def excluded(cap: SwapCap, family: Family, target_name: str) -> str | None:
    """Why the family has no block to swap, or why the target says it has no swap for it; None when the case runs."""
    return no_block_reason(family.name) or (cap.skip(family.name) if cap.skip else None)


SWAP_PARITY: Check[SwapCap] = Check(
    name="swap-parity",
    capability="swap",
    summary="the engine's MoE swapped in for a transformers block == that block, on the same weights",
    draws=lambda cap, family: block_inputs(),
    holds=check_swap_parity,
    describe=BlockInput.describe,
    excludes=excluded,
)
