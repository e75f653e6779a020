"""moe-output-parity: a target's fused MoE computes `reference.moe.experts_forward`'s output.

The problem has the family's tiny sizes (E, K, H, I) and activation, routing from the family's own
router on drawn logits, and inputs rounded to a dtype the target supports; the oracle is experts_forward
on the same (rounded) values in float64. Elementwise tolerance, with the dtype's rtol/atol
(harness/tolerances.py, family overrides first): |out - ref| <= atol + rtol · (|ref| + terms), where
`terms` is the same sum over picks and products computed on absolute values. An output that cancels to
near zero is thus judged against the size of what cancelled, which is what bounds the rounding error
of any correct implementation in that dtype (the reference itself, at the dtype, passes).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.assertions import assert_close_to_terms
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.moe_problems import MoEProblem, moe_problems, problem_biases, problem_inputs
from harness.targets.base import FusedMoECap
from harness.tolerances import tolerance_for
from harness.verdict import PropertyViolation, harness_limit, not_applicable
from reference.moe import experts_forward


def term_magnitude(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, gate_up: torch.Tensor,
                   down: torch.Tensor, *, gate_up_bias: torch.Tensor | None = None,
                   down_bias: torch.Tensor | None = None, weight_on_input: bool = False,
                   activation: str = "silu") -> torch.Tensor:
    """Σ_k |w| · (|down| @ (|g| ⊙ |u|) + |b_down|) in float64, g = |gate| @ |x| + |b_gate| and u likewise: the size
    of every term the output sums (|act(g)| <= 1.13 |g| for silu and both gelus, and the clamped SwiGLUs only shrink
    g and u, swiglu_oai's up taken as |u| + 1; so this bounds |h| too, up to that factor). With `weight_on_input`, |w|
    scales the input instead of the output."""
    width = gate_up.shape[1] // 2
    x, gate_up, down = x.double().abs(), gate_up.double().abs(), down.double().abs()
    out = torch.zeros_like(x)
    for expert in torch.unique(ids).tolist():
        token, slot = torch.where(ids == expert)
        w = weights[token, slot, None].double().abs()
        inp = x[token] * w if weight_on_input else x[token]
        gate, up = inp @ gate_up[expert, :width].T, inp @ gate_up[expert, width:].T
        if gate_up_bias is not None:
            gate = gate + gate_up_bias[expert, :width].double().abs()
            up = up + gate_up_bias[expert, width:].double().abs()
        y = (gate * (up + 1 if activation == "swiglu_oai" else up)) @ down[expert].T
        if down_bias is not None:
            y = y + down_bias[expert].double().abs()
        out.index_add_(0, token, y if weight_on_input else y * w)
    return out


def check_moe_output(fused_moe: FusedMoECap, family: Family, p: MoEProblem) -> None:
    x, weights, ids, gate_up, down = problem_inputs(family, p)
    spec = family.spec
    given: dict[str, Any] = {}
    if spec.expert_bias:
        given["gate_up_bias"], given["down_bias"] = problem_biases(family, p)
    if spec.weight_on_input:
        given["weight_on_input"] = True
    if p.activation in CLAMPED:
        given.update(glu_alpha=spec.glu_alpha, glu_limit=spec.glu_limit)
    keywords = "".join(f", {k}=..." for k in given)
    out = call_target(f"fused_moe(x, weights, ids, gate_up_proj, down_proj, {p.activation!r}{keywords})", fused_moe.fn,
                      x, weights, ids, gate_up, down, p.activation, **given, returns=torch.Tensor)
    if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
        raise PropertyViolation(f"fused_moe returned {out.dtype} {tuple(out.shape)}; expected {x.dtype} "
                                f"{tuple(x.shape)} (x's dtype and shape)")
    expected, terms = expected_output(x, weights, ids, gate_up, down, p.activation, given)
    assert_close_to_terms(out, expected, terms, tolerance_for(p.dtype, family.tolerances),
                          f"fused MoE output vs experts_forward in float64 ({p.dtype})")


def expected_output(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, gate_up: torch.Tensor,
                    down: torch.Tensor, activation: str, keywords: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(experts_forward in float64 with `keywords`, the magnitude of the terms that bound a fused MoE's rounding)."""
    wide: dict[str, Any] = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in keywords.items()}
    expected = experts_forward(x.double(), weights.double(), ids, gate_up.double(), down.double(), activation, **wide)
    bounds = {k: v for k, v in keywords.items() if k in ("gate_up_bias", "down_bias", "weight_on_input")}
    return expected, term_magnitude(x, weights, ids, gate_up, down, activation=activation, **bounds)


# The SwiGLUs that read the clamp keywords (glu_alpha, glu_limit).
CLAMPED = ("swiglu_oai", "swiglu_clamp")
# Block facts (NOTES §3) a fused MoE may compute through experts_forward's keywords (FusedMoECap.facts).
_KEYWORD_FACTS = {"expert_bias": "expert biases", "weight_on_input": "the routing weight applied to the input"}
# Block facts the fused_moe capability does not take at all.
_UNSUPPORTED_FACTS = {"glu_softcaps": "softcapped gate and up projections", "post_norm_eps": "a norm after the block"}


def _excludes(fused_moe: FusedMoECap, family: Family, target_name: str) -> str | None:
    spec = family.spec
    if spec.activation not in fused_moe.activations:
        return not_applicable(f"{target_name}'s fused MoE has no {spec.activation!r} activation "
                              f"(it has {fused_moe.activations})")
    lacks = [what for name, what in _KEYWORD_FACTS.items() if getattr(spec, name) and name not in fused_moe.facts]
    if lacks:
        return not_applicable(f"{target_name}'s fused MoE computes no {' and no '.join(lacks)} "
                              f"(FusedMoECap.facts: {fused_moe.facts})")
    needs = [what for name, what in _UNSUPPORTED_FACTS.items() if getattr(spec, name, False)]
    needs += [] if spec.gated else ["experts without a gate projection"]
    if needs:
        return harness_limit(f"{family.name} needs {' and '.join(needs)}, which the fused_moe capability does not "
                             "take")
    return None


MOE_OUTPUT_PARITY: Check[FusedMoECap] = Check(
    name="moe-output-parity",
    capability="fused_moe",
    summary="fused MoE output [T,H] in x's dtype matches experts_forward in float64 within the dtype tolerance",
    draws=lambda fused_moe, family: moe_problems(family, fused_moe.dtypes),
    holds=check_moe_output,
    describe=lambda p: p.describe(),
    excludes=_excludes,
)
