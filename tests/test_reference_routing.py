"""The routing oracle: each variant's defining identities, checked on drawn inputs."""

from __future__ import annotations

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
    knobs = RoutingKnobs("grouped", 2, n_group=2, topk_group=1, selection_bias=True)
    logits = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    bias = torch.full((4,), -10.0)
    _, ids = route(logits, knobs, bias=bias)
    assert sorted(ids[0].tolist()) == [2, 3]
