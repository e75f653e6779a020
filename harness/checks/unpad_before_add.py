"""unpad-before-add: a padded runner trims the routed output before adding shared experts.

Tolerance. The runner and the block compute the same value, shared + Σ_k w_k·expert_k(x), but a padded
hidden dim changes the kernels' reduction order, so in a 16-bit dtype the two round differently: an
intermediate that lands near a rounding boundary rounds one way on one side and the other way on the
other, and that one-unit difference travels through the activation and the down projection to the
output. A fixed rtol on |expected| cannot bound that (fp16's 1e-3 is about two unit roundoffs, and the
output may be a sum that cancelled). The comparison therefore allows, besides the dtype's rtol/atol,
twice `rounding_bound`: a first-order running error bound of the block's own computation, carried
intermediate by intermediate in float64 (see RoundingModel). Each side is within that bound of the exact
value, so their difference is within twice it. It holds, to first order in the unit roundoffs and with
each dot product's accumulation error taken at its probabilistic √n rate, for any implementation that
performs the block's operations in its dtype (storing each intermediate once, working in float32 or
wider inside each op) on the routing from the block's own router logits. The reference itself stays
within about a third of it in every dtype (tests/test_unpad_tolerance.py); errors beyond it still fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from harness.assertions import assert_close_within
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.padding import PaddingExample, padding_examples
from harness.tolerances import tolerance_for
from harness.verdict import PropertyViolation, not_applicable
from reference.config import MoESpec
from reference.moe import MoEBlock, build_block, expert_mlp_hidden, pad_to

PaddedRunner = Callable[[Any, int], Callable[[torch.Tensor], torch.Tensor]]

# Roundings inside one expert-MLP activation (reference.moe.expert_mlp_hidden, op by op): (stored, wide) =
# results stored in the dtype, and operations torch evaluates in float32 for 16-bit inputs before storing.
# An activation not listed here is counted at DEFAULT_ROUNDINGS.
ACTIVATION_ROUNDINGS = {
    "silu": (2, 3),  # silu (exp, add, div inside) stored, then × up stored
    "gelu": (2, 5),
    "gelu_tanh": (2, 8),
    "relu2": (1, 0),  # relu is exact; the square is stored
    "swiglu_clamp": (2, 3),  # clamps are exact; as silu
    "swiglu_oai": (5, 2),  # up + 1, α·gate, sigmoid (exp, add inside), two products
    "swiglu_softcap": (1, 12),  # evaluated in float32 or wider, stored once
}
DEFAULT_ROUNDINGS = (6, 12)
BOUND_NAME = "2 × the first-order rounding bound of the block's computation in its dtype"


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p for a p-bit significand: a correctly rounded result is within u·|value| (fp16 2^-11, bf16 2^-8)."""
    return torch.finfo(dtype).eps / 2


@dataclass(frozen=True)
class Rounded:
    """An intermediate of the computation: its exact value (float64, from the same stored inputs) and a bound
    on how far an implementation's stored value can lie from it (first order in the unit roundoffs)."""

    value: torch.Tensor
    err: torch.Tensor

    def rows(self, index: torch.Tensor) -> Rounded:
        return Rounded(self.value[index], self.err[index])


class RoundingModel:
    """Running error analysis of ops that store their results in `dtype` and work in float32 (16-bit dtypes) or
    in `dtype` (wider ones). Each op's error bound is its inputs' bounds carried by the op's slope, plus
    u·|result| for storing the result. A length-n dot product adds √n·u_wide·Σ|terms| for its accumulation:
    the probabilistic rate of Higham & Mary (2019) — the worst case n·u_wide exceeds the sum itself at hidden
    sizes in the thousands — which in 16-bit dtypes is small beside the storage roundings."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.u = unit_roundoff(dtype)
        self.u_wide = unit_roundoff(torch.promote_types(dtype, torch.float32))

    @staticmethod
    def exact(t: torch.Tensor) -> Rounded:
        t = t.detach().double()
        return Rounded(t, torch.zeros_like(t))

    def stored(self, value: torch.Tensor, err: torch.Tensor) -> Rounded:
        return Rounded(value, err + self.u * value.abs())

    def linear(self, x: Rounded, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Rounded:
        w = weight.detach().double()
        value, terms = x.value @ w.T, x.value.abs() @ w.abs().T
        if bias is not None:
            value, terms = value + bias.detach().double(), terms + bias.detach().double().abs()
        carried = x.err @ w.abs().T if x.err.any() else 0.0
        return self.stored(value, carried + math.sqrt(w.shape[-1] + 1) * self.u_wide * terms)

    def mul(self, a: Rounded, b: Rounded) -> Rounded:
        return self.stored(a.value * b.value, a.value.abs() * b.err + b.value.abs() * a.err)

    def add(self, a: Rounded, b: Rounded) -> Rounded:
        return self.stored(a.value + b.value, a.err + b.err)

    def sigmoid(self, x: Rounded) -> Rounded:
        return self.stored(torch.sigmoid(x.value), x.err / 4 + 2 * self.u_wide * torch.sigmoid(x.value))

    def mlp_hidden(self, first: Rounded, spec: MoESpec, activation: str) -> Rounded:
        """reference.moe.expert_mlp_hidden on the first projection [n, 2I] ([gate | up]) or [n, I] (not gated).

        Its partial derivatives come from autograd on the reference's own function (it is elementwise in
        each (gate, up) pair); each of its internal roundings moves the result by at most u times the
        elasticity |h| + |gate·∂h/∂gate| + |up·∂h/∂up| (first order)."""
        p = first.value.clone().requires_grad_(True)
        with torch.enable_grad():
            h = expert_mlp_hidden(p, activation, spec.gated, spec.glu_alpha, spec.glu_limit, spec.glu_softcaps)
            (slope,) = torch.autograd.grad(h.sum(), p)
        h, slope = h.detach(), slope.abs()

        def per_output(t: torch.Tensor) -> torch.Tensor:  # sum the gate and up halves onto h's columns
            return t[:, : h.shape[-1]] + t[:, h.shape[-1]:] if spec.gated else t

        carried = per_output(slope * first.err)
        elasticity = h.abs() + per_output(slope * first.value.abs())
        stored, wide = ACTIVATION_ROUNDINGS.get(activation, DEFAULT_ROUNDINGS)
        return Rounded(h, carried + (stored * self.u + wide * self.u_wide) * elasticity)

    def rms_norm(self, x: Rounded, weight: torch.Tensor, eps: float) -> Rounded:
        """reference.moe.RMSNorm: x / sqrt(mean(x²) + eps) in float32 or wider, stored, then × weight stored."""
        rms = (x.value.square().mean(-1, keepdim=True) + eps).sqrt()
        normed = x.value / rms
        # d(x_j / rms) = dx_j / rms - normed_j · Σ_i x_i dx_i / (H · rms²)
        err = x.err / rms + normed.abs() * (x.value.abs() * x.err).sum(-1, keepdim=True) / (x.value.shape[-1] * rms ** 2)
        normed_r = self.stored(normed, err + (math.sqrt(x.value.shape[-1]) + 4) * self.u_wide * normed.abs())
        return self.mul(normed_r, self.exact(weight))


def rounding_bound(block: MoEBlock, x: torch.Tensor) -> torch.Tensor:
    """A bound [T, H] on |impl(x) - exact block(x)| for an implementation of `block`'s forward in x.dtype that
    stores each intermediate once in x.dtype and works in float32 or wider within each op (the reference's
    experts_forward, DenseMLP, shared gate and post-block norm, op by op), given the block's routing
    (its weights and ids from the block's own router logits)."""
    m = RoundingModel(x.dtype)
    spec, experts = block.spec, block.experts
    with torch.no_grad():
        weights, ids = block.routing(block.router_logits(x))
    first_proj, first_bias, down_proj = experts.first_proj, experts.first_bias, experts.down_proj
    down_bias = getattr(experts, "down_proj_bias", None)
    xr = m.exact(x)
    routed, routed_err, routed_terms = (torch.zeros_like(xr.value) for _ in range(3))
    for expert in torch.unique(ids).tolist():
        token, slot = torch.where(ids == expert)
        w = weights[token, slot, None].double()
        inp = xr.rows(token)
        if spec.weight_on_input:  # x[token] * w.to(x.dtype): w rounded to the dtype, then the product stored
            inp = m.mul(inp, Rounded(w, m.u * w.abs()))
        first = m.linear(inp, first_proj[expert], None if first_bias is None else first_bias[expert])
        h = m.mlp_hidden(first, spec, experts.activation)
        y = m.linear(h, down_proj[expert], None if down_bias is None else down_bias[expert])
        scale = torch.ones_like(w) if spec.weight_on_input else w
        routed.index_add_(0, token, scale * y.value)
        routed_err.index_add_(0, token, scale.abs() * y.err)
        routed_terms.index_add_(0, token, (scale * y.value).abs())
    # The K picks' products and their sum are formed in float32 (or wider), then the sum is stored.
    out = m.stored(routed, routed_err + (ids.shape[-1] + 1) * m.u_wide * routed_terms)
    mlp = block.shared_experts
    if mlp is not None:
        first = m.linear(xr, mlp.up_proj.weight)
        if mlp.gate_proj is not None:
            gate = m.linear(xr, mlp.gate_proj.weight)
            first = Rounded(torch.cat([gate.value, first.value], -1), torch.cat([gate.err, first.err], -1))
        shared = m.linear(m.mlp_hidden(first, spec, mlp.activation), mlp.down_proj.weight)
        shared_gate = block.shared_expert_gate
        if shared_gate is not None:
            shared = m.mul(m.sigmoid(m.linear(xr, shared_gate.weight)), shared)
        out = m.add(out, shared)
    if block.post_norm is not None:
        out = m.rms_norm(out, block.post_norm.weight, block.post_norm.eps)
    return out.err


def example_inputs(family: Family, example: PaddingExample) -> tuple[MoEBlock, torch.Tensor]:
    """The block (the family's spec at the example's hidden size, seeded weights in its dtype) and input x."""
    dim = example.dim
    block = build_block(replace(family.spec, hidden_size=dim.hidden), example.seed, dtype=dim.dtype)
    gen = torch.Generator().manual_seed(example.seed)
    return block, torch.randn(example.tokens, dim.hidden, generator=gen).to(dim.dtype)


def check_unpad(padded_runner: PaddedRunner, family: Family, example: PaddingExample) -> None:
    dim = example.dim
    block, x = example_inputs(family, example)
    runner = call_target(f"padded_runner(block, alignment={dim.elements})", padded_runner, block, dim.elements)
    with torch.no_grad():
        out = call_target("runner(x)", runner, x, returns=torch.Tensor)
        expected = block(x)
    if out.shape != x.shape:
        raise PropertyViolation(f"output shape {tuple(out.shape)} != input shape {tuple(x.shape)} "
                                f"(hidden {dim.hidden} padded to {pad_to(dim.hidden, dim.elements)})")
    tol = tolerance_for(dim.dtype, family.tolerances)
    assert_close_within(out, expected, 2 * rounding_bound(block, x), tol,
                        "padded runner output vs shared + routed computed without padding", BOUND_NAME)
    if pad_to(dim.hidden, dim.elements) == dim.hidden and not torch.equal(out, expected):
        raise PropertyViolation("padding to an alignment the hidden size already meets changed the output")


def _describe(example: PaddingExample) -> dict[str, Any]:
    dim = example.dim
    return {"hidden": dim.hidden, "alignment": dim.alignment, "alignment_elements": dim.elements,
            "dtype": str(dim.dtype), "padded_hidden": pad_to(dim.hidden, dim.elements), "tokens": example.tokens,
            "seed": example.seed}


UNPAD: Check[PaddedRunner] = Check(
    name="unpad-before-add",
    capability="padded_runner",
    summary="output hidden == input hidden; out == shared + routed without padding; aligned sizes untouched",
    draws=lambda padded_runner, family: padding_examples(),
    holds=check_unpad,
    describe=_describe,
    excludes=lambda padded_runner, family, target_name: None if family.spec.shared_combine != "none"
    else not_applicable(f"{family.name} has no shared experts: nothing is added after the routed output"),
)
