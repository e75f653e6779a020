"""routing-parity: a target's routing picks a valid top-K and weights it as the reference does."""

from __future__ import annotations

import hypothesis
import torch
from hypothesis import strategies as st

from harness.assertions import assert_close, assert_valid_routing
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.routing_inputs import RoutingExample, routing_examples
from harness.targets.base import RoutingCap
from harness.tolerances import WEIGHT_TOLERANCE, Tolerance
from harness.verdict import PropertyViolation, not_applicable
from reference.routing import weights_for


def _assert_well_formed(weights: torch.Tensor, ids: torch.Tensor, tokens: int, experts: int, k: int) -> None:
    """Weights float32 and ids int32, both [T, K]; ids in range and distinct per token."""
    if weights.dtype != torch.float32 or ids.dtype != torch.int32:
        raise PropertyViolation(f"routing returned weights {weights.dtype} and ids {ids.dtype}; "
                                "expected torch.float32 and torch.int32")
    if tuple(weights.shape) != (tokens, k) or tuple(ids.shape) != (tokens, k):
        raise PropertyViolation(f"routing returned shapes {tuple(weights.shape)}, {tuple(ids.shape)}; "
                                f"expected ({tokens}, {k}) for both")
    ids = ids.cpu()
    if ((ids < 0) | (ids >= experts)).any():
        raise PropertyViolation("expert id out of range",
                                ids=ids[((ids < 0) | (ids >= experts)).any(-1)][0].tolist())
    if (ids.sort(-1).values.diff(dim=-1) == 0).any():
        raise PropertyViolation("an expert is picked twice for one token")


def check_routing(routing: RoutingCap, family: Family, ex: RoutingExample, tol: Tolerance = WEIGHT_TOLERANCE) -> None:
    # The oracle reads private copies taken before the call: a target that changes its inputs in place
    # (scales the logits, say) must not move the reference with it.
    logits = ex.logits.detach().cpu().double().clone()
    bias = ex.bias.detach().cpu().double().clone() if ex.bias is not None else None
    scale = ex.per_expert_scale.detach().cpu().double().clone() if ex.per_expert_scale is not None else None
    weights, ids = call_target("routing(logits, knobs)", routing.of(family.name).fn, ex.logits, ex.knobs,
                               bias=ex.bias, per_expert_scale=ex.per_expert_scale, returns=(torch.Tensor, torch.Tensor))
    t, e = logits.shape
    k = ex.knobs.top_k
    _assert_well_formed(weights, ids, t, e, k)
    ids = ids.cpu()
    assert_valid_routing(logits, ex.knobs, bias, ids, k)
    want = weights_for(logits, ids, ex.knobs, scale)
    # Steers the nightly profile's target phase toward inputs where the weights drift furthest
    # (target() takes finite floats only; a NaN fails assert_close below anyway).
    drift = (weights.cpu().double() - want).abs().max().nan_to_num(0.0, 0.0, 0.0)
    hypothesis.target(float(drift), label="routing weight error")
    assert_close(weights.cpu(), want, tol, "routing weights for the picked experts")


def _excludes(routing: RoutingCap, family: Family, target_name: str) -> str | None:
    variant = family.spec.routing.variant
    serving = routing.of(family.name)
    return None if variant in serving.variants else not_applicable(
        f"{target_name} does not implement {variant} routing" + ("" if serving is routing else f" for {family.name}"))


def _draws(routing: RoutingCap, family: Family) -> st.SearchStrategy[RoutingExample]:
    serving = routing.of(family.name)
    return routing_examples((family.spec.routing.variant,), group_scores=serving.group_scores,
                            renormalize=serving.renormalize)


ROUTING_PARITY: Check[RoutingCap] = Check(
    name="routing-parity",
    capability="routing",
    summary="ids int32 and weights float32 [T,K]; a valid top-K (tie-aware); weights match the reference",
    draws=_draws,
    holds=check_routing,
    describe=lambda ex: ex.describe(),
    excludes=_excludes,
)
