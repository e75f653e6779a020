"""The size of the terms a block's output sums: what a computation in a narrower dtype errs in proportion to,
however much the terms cancel (the bound `assert_close_to_terms` scales its rtol by)."""

from __future__ import annotations

import torch

from reference.moe import MoEBlock


def _magnitude(x: torch.Tensor, first: torch.Tensor, down: torch.Tensor, gated: bool) -> torch.Tensor:
    """|down| @ ((|gate| @ |x|) * (|up| @ |x|)) (or |down| @ (|up| @ |x|) ungated) in float64, `first` the gate
    rows then the up rows: the size of the terms one MLP sums (its activation grows no term by more than 1.13x)."""
    h = x.double().abs() @ first.double().abs().T
    if gated:
        gate, up = h.chunk(2, dim=-1)
        h = gate * up
    return h @ down.double().abs().T


def block_terms(block: MoEBlock, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The size of every term a block's output for x [T, H] sums (routed experts weighted by their routing
    weights, and the shared experts): a computation in a narrower dtype errs in proportion to it."""
    weights, ids = block.routing(logits)
    experts, out = block.experts, torch.zeros(x.shape, dtype=torch.float64)
    for expert in torch.unique(ids).tolist():
        token, slot = torch.where(ids == expert)
        term = _magnitude(x[token], experts.first_proj[expert], experts.down_proj[expert], block.spec.gated)
        out.index_add_(0, token, term * weights[token, slot, None].double().abs())
    shared = getattr(block, "shared_experts", None)
    if shared is not None:
        first = shared.up_proj.weight if shared.gate_proj is None else torch.cat(
            [shared.gate_proj.weight, shared.up_proj.weight])
        out += _magnitude(x, first, shared.down_proj.weight, shared.gate_proj is not None)
    return out
