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

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.targets.base import Target
from harness.tolerances import Tolerance, tolerance_for
from harness.verdict import PropertyViolation
from reference.moe import experts_forward
from reference.routing import route

# "routed": the family's router on random logits; "hot": every token picks the same K experts, so one
# expert gets many rows (several blocks of a kernel that groups rows by expert).
STYLES = ("routed", "hot")


@dataclass(frozen=True)
class MoEProblem:
    experts: int
    top_k: int
    hidden: int
    width: int
    activation: str
    tokens: int
    dtype: torch.dtype
    style: str
    seed: int

    def describe(self) -> dict[str, object]:
        return {"experts": self.experts, "top_k": self.top_k, "hidden": self.hidden, "width": self.width,
                "activation": self.activation, "tokens": self.tokens,
                "dtype": str(self.dtype).removeprefix("torch."), "style": self.style, "seed": self.seed}


def moe_problems(family: Family, dtypes: tuple[torch.dtype, ...]) -> st.SearchStrategy[MoEProblem]:
    """Problems of `family`'s tiny spec: 1..40 tokens, a dtype of `dtypes`, a style of STYLES.
    Shrinks toward one token, the first dtype, the routed style."""
    spec = family.spec
    return st.builds(MoEProblem, experts=st.just(spec.num_experts), top_k=st.just(spec.top_k),
                     hidden=st.just(spec.hidden_size), width=st.just(spec.intermediate_size),
                     activation=st.just(spec.activation), tokens=st.integers(1, 40), dtype=st.sampled_from(dtypes),
                     style=st.sampled_from(STYLES), seed=st.integers(0, 2**16))


def problem_inputs(family: Family, p: MoEProblem) -> tuple[torch.Tensor, ...]:
    """(x, weights float32, ids int32, gate_up_proj, down_proj), x and projections in p.dtype."""
    gen = torch.Generator().manual_seed(p.seed)
    x = torch.randn(p.tokens, p.hidden, generator=gen, dtype=torch.float64)
    gate_up = torch.randn(p.experts, 2 * p.width, p.hidden, generator=gen, dtype=torch.float64) / math.sqrt(p.hidden)
    down = torch.randn(p.experts, p.hidden, p.width, generator=gen, dtype=torch.float64) / math.sqrt(p.width)
    logits = torch.randn(p.tokens, p.experts, generator=gen, dtype=torch.float64)
    if p.style == "hot":
        logits[:, : p.top_k] += 100.0
    bias = torch.randn(p.experts, generator=gen) * 0.1
    scale = torch.rand(p.experts, generator=gen) + 0.5
    weights, ids = route(logits.float(), family.spec.routing, bias=bias, per_expert_scale=scale)
    return x.to(p.dtype), weights, ids, gate_up.to(p.dtype), down.to(p.dtype)


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


def assert_close_to_terms(actual: torch.Tensor, expected: torch.Tensor, terms: torch.Tensor, tol: Tolerance,
                          what: str) -> None:
    """Raise PropertyViolation where |actual - expected| > atol + rtol · (|expected| + terms) (NaN fails)."""
    a = actual.detach().double().cpu()
    allowed = tol.atol + tol.rtol * (expected.abs() + terms)
    diff = (a - expected).abs()
    bad = ~(diff <= allowed)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        described = f"{tol} with rtol applied to |expected| + |terms|"
        raise PropertyViolation(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ beyond {described}; first at {idx}: "
            f"{a[idx].item():.6g} vs expected {expected[idx].item():.6g} (allowed difference "
            f"{allowed[idx].item():.3g}); max abs diff {diff.nan_to_num(float('inf')).max().item():.3g}",
            tolerance=described, index=idx, actual=a[idx].item(), expected=expected[idx].item(),
        )


def check_moe_output(target: Target, family: Family, p: MoEProblem) -> None:
    assert target.fused_moe is not None
    x, weights, ids, gate_up, down = problem_inputs(family, p)
    out = call_target(f"fused_moe(x, weights, ids, gate_up_proj, down_proj, {p.activation!r})", target.fused_moe.fn,
                      x, weights, ids, gate_up, down, p.activation)
    if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
        raise PropertyViolation(f"fused_moe returned {out.dtype} {tuple(out.shape)}; expected {x.dtype} "
                                f"{tuple(x.shape)} (x's dtype and shape)")
    expected = experts_forward(x.double(), weights.double(), ids, gate_up.double(), down.double(), p.activation)
    terms = term_magnitude(x, weights, ids, gate_up, down)
    assert_close_to_terms(out, expected, terms, tolerance_for(p.dtype, family.tolerances),
                          f"fused MoE output vs experts_forward in float64 ({p.dtype})")


# Block facts (NOTES §3) that experts_forward's positional form does not compute.
_UNSUPPORTED_FACTS = {"expert_bias": "expert biases", "weight_on_input": "the routing weight applied to the input"}


def _applies(target: Target, family: Family) -> str | None:
    assert target.fused_moe is not None
    spec = family.spec
    if spec.activation not in target.fused_moe.activations:
        return f"{target.name}'s fused MoE has no {spec.activation!r} activation (it has {target.fused_moe.activations})"
    needs = [what for name, what in _UNSUPPORTED_FACTS.items() if getattr(spec, name, False)]
    if needs:
        return f"{family.name} needs {' and '.join(needs)}, which the fused_moe capability does not take"
    return None


MOE_OUTPUT_PARITY = Check(
    name="moe-output-parity",
    capability="fused_moe",
    summary="fused MoE output [T,H] in x's dtype matches experts_forward in float64 within the dtype tolerance",
    strategy=lambda target, family: moe_problems(family, target.fused_moe.dtypes),  # type: ignore[union-attr]
    prop=check_moe_output,
    describe=lambda p: p.describe(),
    applies=_applies,
    # One family per activation and routing-weight shape (weights summing to 1, to a scale, sigmoid
    # weights, per-expert scales) plus the two whose blocks need more than the positional form; the
    # other default families' tiny problems repeat mixtral's with other weights.
    families=("gemma4", "mixtral", "deepseek_v3", "minimax_m2", "gpt_oss", "llama4_text"),
)
