"""routing-parity: a target's routing picks a valid top-K and weights it as the reference does."""

from __future__ import annotations

import hypothesis
import torch

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.routing_inputs import RoutingExample, routing_examples
from harness.targets.base import Target
from harness.tolerances import Tolerance, assert_close
from harness.verdict import PropertyViolation
from reference.routing import selection_scores, weights_for

# Weights are float32 outputs of float32 arithmetic on both sides; the oracle runs in float64.
WEIGHT_TOLERANCE = Tolerance(1e-5, 1e-6)


def assert_valid_selection(scores: torch.Tensor, ids: torch.Tensor, k: int) -> None:
    """Raise PropertyViolation unless no unpicked expert scores above a picked one (ties allowed)."""
    picked = scores.gather(-1, ids.long())
    unpicked = scores.scatter(-1, ids.long(), float("-inf"))
    slack = 1e-6 * scores.abs().nan_to_num(0, 0, 0).amax(-1)
    worse = picked.amin(-1) < unpicked.amax(-1) - slack
    if worse.any():
        tok = int(worse.nonzero()[0])
        raise PropertyViolation("routing picked an expert that scores below one it left out",
                                token=tok, picked=sorted(ids[tok].tolist()),
                                reference_top_k=scores[tok].argsort(descending=True, stable=True)[:k].tolist())


def check_routing(target: Target, family: Family, ex: RoutingExample, tol: Tolerance = WEIGHT_TOLERANCE) -> None:
    assert target.routing is not None
    weights, ids = call_target("routing(logits, knobs)", target.routing.fn, ex.logits, ex.knobs,
                               bias=ex.bias, per_expert_scale=ex.per_expert_scale)
    t, e = ex.logits.shape
    k = ex.knobs.top_k
    if weights.dtype != torch.float32 or ids.dtype != torch.int32:
        raise PropertyViolation(f"routing returned weights {weights.dtype} and ids {ids.dtype}; "
                                "expected torch.float32 and torch.int32")
    if tuple(weights.shape) != (t, k) or tuple(ids.shape) != (t, k):
        raise PropertyViolation(f"routing returned shapes {tuple(weights.shape)}, {tuple(ids.shape)}; "
                                f"expected ({t}, {k}) for both")
    ids = ids.cpu()
    if ((ids < 0) | (ids >= e)).any():
        raise PropertyViolation("expert id out of range", ids=ids[((ids < 0) | (ids >= e)).any(-1)][0].tolist())
    if (ids.sort(-1).values.diff(dim=-1) == 0).any():
        raise PropertyViolation("an expert is picked twice for one token")
    logits = ex.logits.cpu().double()
    bias = ex.bias.double() if ex.bias is not None else None
    assert_valid_selection(selection_scores(logits, ex.knobs, bias), ids, k)
    scale = ex.per_expert_scale.double() if ex.per_expert_scale is not None else None
    want = weights_for(logits, ids, ex.knobs, scale)
    # Steers the nightly profile's target phase toward inputs where the weights drift furthest
    # (target() takes finite floats only; a NaN fails assert_close below anyway).
    drift = (weights.cpu().double() - want).abs().max().nan_to_num(0.0, 0.0, 0.0)
    hypothesis.target(float(drift), label="routing weight error")
    assert_close(weights.cpu(), want, tol, "routing weights for the picked experts")


ROUTING_PARITY = Check(
    name="routing-parity",
    capability="routing",
    summary="ids int32 and weights float32 [T,K]; a valid top-K (tie-aware); weights match the reference",
    strategy=lambda target, family: routing_examples((family.spec.routing.variant,)),
    prop=check_routing,
    describe=lambda ex: ex.describe(),
    applies=lambda target, family: None if family.spec.routing.variant in target.routing.variants  # type: ignore[union-attr]
    else f"{target.name} does not implement {family.spec.routing.variant} routing",
)
