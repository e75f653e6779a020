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

import torch

from harness.assertions import assert_close_to_terms
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.moe_problems import MoEProblem, moe_problems, problem_inputs
from harness.targets.base import FusedMoECap
from harness.tolerances import tolerance_for
from harness.verdict import PropertyViolation, harness_limit, not_applicable
from reference.moe import experts_forward


def term_magnitude(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, gate_up: torch.Tensor,
                   down: torch.Tensor) -> torch.Tensor:
    """Σ_k |w| · |down| @ ((|gate| @ |x|) ⊙ (|up| @ |x|)) in float64: the size of every term the output sums
    (|act(g)| <= 1.13 |g| for silu and both gelus, so this bounds |h| too, up to that factor)."""
    width = gate_up.shape[1] // 2
    x, gate_up, down = x.double().abs(), gate_up.double().abs(), down.double().abs()
    out = torch.zeros_like(x)
    for expert in torch.unique(ids).tolist():
        token, slot = torch.where(ids == expert)
        gate = x[token] @ gate_up[expert, :width].T
        up = x[token] @ gate_up[expert, width:].T
        out.index_add_(0, token, (gate * up) @ down[expert].T * weights[token, slot, None].double().abs())
    return out


def check_moe_output(fused_moe: FusedMoECap, family: Family, p: MoEProblem) -> None:
    x, weights, ids, gate_up, down = problem_inputs(family, p)
    out = call_target(f"fused_moe(x, weights, ids, gate_up_proj, down_proj, {p.activation!r})", fused_moe.fn,
                      x, weights, ids, gate_up, down, p.activation, returns=torch.Tensor)
    if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
        raise PropertyViolation(f"fused_moe returned {out.dtype} {tuple(out.shape)}; expected {x.dtype} "
                                f"{tuple(x.shape)} (x's dtype and shape)")
    expected = experts_forward(x.double(), weights.double(), ids, gate_up.double(), down.double(), p.activation)
    terms = term_magnitude(x, weights, ids, gate_up, down)
    assert_close_to_terms(out, expected, terms, tolerance_for(p.dtype, family.tolerances),
                          f"fused MoE output vs experts_forward in float64 ({p.dtype})")


# Block facts (NOTES §3) that experts_forward's positional form does not compute.
_UNSUPPORTED_FACTS = {"expert_bias": "expert biases", "weight_on_input": "the routing weight applied to the input",
                      "glu_softcaps": "softcapped gate and up projections",
                      "post_norm_eps": "a norm after the block"}


def _excludes(fused_moe: FusedMoECap, family: Family, target_name: str) -> str | None:
    spec = family.spec
    if spec.activation not in fused_moe.activations:
        return not_applicable(f"{target_name}'s fused MoE has no {spec.activation!r} activation "
                              f"(it has {fused_moe.activations})")
    needs = [what for name, what in _UNSUPPORTED_FACTS.items() if getattr(spec, name, False)]
    needs += [] if spec.gated else ["experts without a gate projection"]
    if needs:
        return harness_limit(f"{family.name} needs {' and '.join(needs)}, which the fused_moe capability's "
                             "positional form does not take")
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
