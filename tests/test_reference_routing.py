"""The routing oracle: each variant's defining identities, checked on drawn inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from harness.strategies.routing_inputs import routing_examples
from reference.routing import RoutingInputError, route, topk_stable


@settings(max_examples=80, deadline=None)
@given(routing_examples())
def test_route_shapes_dtypes_and_identities(ex) -> None:
    w, ids = route(ex.logits, ex.knobs, bias=ex.bias, per_expert_scale=ex.per_expert_scale)
    t, k = ex.logits.shape[0], ex.knobs.top_k
    assert w.shape == ids.shape == (t, k) and w.dtype == torch.float32 and ids.dtype == torch.int32
    finite = torch.isfinite(ex.logits.float()).all(-1) & (ex.logits.float().abs() < 1e4).all(-1)
    if ex.knobs.variant == "gemma4":
        # Scale after renorm: sum(w / scale[ids]) == 1.
        total = (w / ex.per_expert_scale[ids.long()]).sum(-1)
        assert torch.allclose(total[finite], torch.ones_like(total[finite]), atol=1e-5)
    if ex.knobs.variant in ("topk_softmax",) or (ex.knobs.variant == "softmax_topk" and ex.knobs.renormalize):
        assert torch.allclose(w.sum(-1)[finite], torch.ones(int(finite.sum())), atol=1e-5)


def test_ties_break_by_lower_index() -> None:
    values, ids = topk_stable(torch.tensor([[1.0, 3.0, 3.0, 3.0]]), 2)
    assert ids.tolist() == [[1, 2]]


@pytest.mark.parametrize("variant", ["sigmoid_topk_on_logits", "sigmoid_bias", "grouped"])
def test_sigmoid_weights_of_logits_whose_float32_sigmoid_underflows(variant: str) -> None:
    from reference.config import RoutingKnobs

    # A float32 sigmoid is 0 below about -104 (float64's below -709): the float32 route renormalises the float64
    # sigmoids, not 0 / 0. A logit of -inf still gives NaN, as 0 / 0 does in float64.
    logits = torch.tensor([[-662.0, -700.0, -300.0, -200.0], [float("-inf")] * 4], dtype=torch.float16)
    knobs = RoutingKnobs(variant, 1, renormalize=True, **({"n_group": 2, "topk_group": 1} if variant == "grouped" else {}))
    weights, ids = route(logits, knobs, bias=torch.zeros(4))
    oracle = route(logits, knobs, bias=torch.zeros(4), oracle=True)[0]
    assert weights[0].tolist() == [1.0] and weights[1].isnan().all(), weights
    assert torch.equal(weights.isnan(), oracle.isnan()) and ids.dtype == torch.int32


def test_k_greater_than_e_is_rejected() -> None:
    from reference.config import RoutingKnobs

    try:
        route(torch.zeros(2, 3), RoutingKnobs("softmax_topk", 4))
    except RoutingInputError as exc:
        assert "top_k=4" in str(exc)
    else:
        raise AssertionError("K > E accepted")


def test_grouped_masks_with_negative_infinity() -> None:
    from reference.config import RoutingKnobs

    # Biased scores are negative everywhere; the kept group must still win over the masked one.
    knobs = RoutingKnobs("grouped", 2, n_group=2, topk_group=1)
    logits = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    bias = torch.full((4,), -10.0)
    _, ids = route(logits, knobs, bias=bias)
    assert sorted(ids[0].tolist()) == [2, 3]


def test_grouped_zero_filled_picks_a_dropped_expert_over_a_negative_kept_one() -> None:
    from reference.config import RoutingKnobs

    # Group {2,3} is kept; its biased scores (sigmoid - 10) are negative, so the dropped group's 0.0 wins (AXK2).
    knobs = RoutingKnobs("grouped_zero_filled", 2, n_group=2, topk_group=1)
    logits = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    bias = torch.tensor([-20.0, -20.0, -10.0, -10.0])
    w, ids = route(logits, knobs, bias=bias, oracle=True)
    assert sorted(ids[0].tolist()) == [0, 1]
    assert torch.allclose(w[0].double(), torch.sigmoid(torch.zeros(2, dtype=torch.float64)))


def _softmax_bias_by_hand(logits: list[float], bias: list[float], k: int, renorm: bool,
                          scale: float) -> tuple[list[int], list[float]]:
    """softmax_bias written out with math.exp: choose on p + bias, weigh with p (NOTES §2, ernie4_5_moe)."""
    import math

    exps = [math.exp(v - max(logits)) for v in logits]
    probs = [v / sum(exps) for v in exps]
    chosen = sorted(range(len(probs)), key=lambda e: (-(probs[e] + bias[e]), e))[:k]
    weights = [probs[e] for e in chosen]
    if renorm:
        weights = [w / sum(weights) for w in weights]
    return chosen, [w * scale for w in weights]


def test_softmax_bias_matches_a_hand_computation() -> None:
    from reference.config import RoutingKnobs

    logits = [2.0, 1.5, 0.3, -1.0, 0.9]
    # The bias promotes expert 3 (lowest probability) into the top 2 and demotes expert 0 (highest).
    bias = [-1.0, 0.0, 0.0, 2.0, 0.1]
    for renorm, scale in ((True, 1.0), (False, 1.0), (True, 2.5)):
        knobs = RoutingKnobs("softmax_bias", 2, renormalize=renorm, scaling_factor=scale)
        w, ids = route(torch.tensor([logits], dtype=torch.float64), knobs, bias=torch.tensor(bias), oracle=True)
        want_ids, want_w = _softmax_bias_by_hand(logits, bias, 2, renorm, scale)
        assert ids[0].tolist() == want_ids == [3, 1]
        assert torch.allclose(w[0], torch.tensor(want_w, dtype=torch.float64), rtol=1e-12, atol=0)


def test_softmax_bias_weights_never_see_the_bias() -> None:
    from reference.config import RoutingKnobs

    knobs = RoutingKnobs("softmax_bias", 2, renormalize=False)
    logits = torch.tensor([[0.5, 0.1, -0.2, 0.7]])
    w_zero, ids = route(logits, knobs, bias=torch.zeros(4))
    w_big, ids_big = route(logits, knobs, bias=torch.full((4,), 5.0))  # a uniform bias changes nothing
    assert ids.tolist() == ids_big.tolist() and torch.equal(w_zero, w_big)
    assert torch.allclose(w_zero, torch.softmax(logits, -1).gather(-1, ids.long()))


def test_grouped_softmax_keeps_the_best_groups() -> None:
    from reference.config import RoutingKnobs

    # Groups {0,1} and {2,3}: group 0 holds the best expert, group 1 the larger top-2 sum.
    logits = torch.tensor([[3.0, -4.0, 2.5, 2.5]])
    p = torch.softmax(logits.double(), -1)[0]
    assert p[2] + p[3] > p[0] + p[1] and p[0] > p[2]
    top2 = RoutingKnobs("grouped_softmax", 2, n_group=2, topk_group=1, group_score="top2_sum")
    by_max = RoutingKnobs("grouped_softmax", 2, n_group=2, topk_group=1, group_score="max")
    _, ids = route(logits, top2, oracle=True)
    assert sorted(ids[0].tolist()) == [2, 3]
    w, ids = route(logits, by_max, oracle=True)
    assert sorted(ids[0].tolist()) == [0, 1]  # group 0 holds the single best expert
    assert torch.allclose(w[0], p[ids[0].long()])


def test_sigmoid_logit_bias_selects_on_biased_logits() -> None:
    from reference.config import RoutingKnobs

    knobs = RoutingKnobs("sigmoid_logit_bias", 1)
    logits = torch.tensor([[1.0, 0.0]])
    w, ids = route(logits, knobs, bias=torch.tensor([0.0, 1.5]), oracle=True)
    assert ids.tolist() == [[1]] and torch.allclose(w, torch.sigmoid(torch.tensor([[0.0]], dtype=torch.float64)))


def test_groups_tied_at_the_boundary_may_be_kept_either_way() -> None:
    """Groups {0,1} and {2,3} tie on their best expert: a router keeping either is valid, one picking from a group
    that does not tie is not (the tie-aware judgement of `assert_valid_routing`)."""
    from harness.assertions import assert_valid_routing
    from harness.verdict import PropertyViolation
    from reference.config import RoutingKnobs

    knobs = RoutingKnobs("grouped_softmax", 1, n_group=2, topk_group=1, group_score="max")
    tied = torch.tensor([[2.0, 0.0, 2.0, 1.0]], dtype=torch.float64)
    assert_valid_routing(tied, knobs, None, torch.tensor([[0]]), 1)
    assert_valid_routing(tied, knobs, None, torch.tensor([[2]]), 1)  # the other tied group, its best expert
    with pytest.raises(PropertyViolation, match="scores below one it left out"):
        assert_valid_routing(tied, knobs, None, torch.tensor([[3]]), 1)  # kept group 1, but not its best
    untied = torch.tensor([[2.0, 0.0, 1.9, 1.0]], dtype=torch.float64)
    with pytest.raises(PropertyViolation, match="scores below one it left out"):
        assert_valid_routing(untied, knobs, None, torch.tensor([[2]]), 1)  # group 1 is dropped
