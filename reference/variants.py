"""The routing variants of NOTES §2 as data: which score selects the top K, what weight a pick gets, and which
knobs each variant reads. `reference/routing.py` computes them from these records alone.

Order matters: a variant's index in VARIANTS is its code in the Triton kernels, so new variants are appended.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoutingVariant:
    """One routing variant.

    Selection: `score` of the logits (softmax over all experts, sigmoid, or the raw logits), plus a per-expert
    bias when `biased` (selection only, weights never see it), then, when `grouped`, only the `topk_group` best
    of `n_group` expert groups are kept, the experts of the other groups scoring `dropped_score` (-inf: never
    picked; 0.0: picked over a kept expert whose biased score is negative, as AXK2's code does). Weights: `weight` is `all_softmax` (the softmax over all experts,
    gathered at the picks), `picked_softmax` (a softmax over the K picked logits) or `picked_sigmoid`; then
    multiplied by the per-expert scale when `per_expert_scale`, renormalised to sum 1 when `renormalizes` and
    the knob says so, and multiplied by the routed scaling factor when `scaled`.
    """

    name: str
    score: str  # softmax | sigmoid | logits
    weight: str  # all_softmax | picked_softmax | picked_sigmoid
    biased: bool = False
    grouped: bool = False
    renormalizes: bool = False  # reads the renormalize knob
    scaled: bool = False  # reads the routed scaling factor
    per_expert_scale: bool = False
    dropped_score: float = float("-inf")
    groups_optional: bool = False  # a grouped variant that may also route over all experts (no groups set)


VARIANTS: dict[str, RoutingVariant] = {v.name: v for v in (
    RoutingVariant("softmax_topk", "softmax", "all_softmax", renormalizes=True),
    RoutingVariant("gemma4", "logits", "picked_softmax", per_expert_scale=True),
    RoutingVariant("topk_softmax", "logits", "picked_softmax"),
    RoutingVariant("sigmoid_bias", "sigmoid", "picked_sigmoid", biased=True, renormalizes=True, scaled=True),
    RoutingVariant("grouped", "sigmoid", "picked_sigmoid", biased=True, grouped=True, renormalizes=True, scaled=True),
    RoutingVariant("sigmoid_topk_on_logits", "logits", "picked_sigmoid", renormalizes=True),
    RoutingVariant("softmax_bias", "softmax", "all_softmax", biased=True, renormalizes=True, scaled=True),
    RoutingVariant("grouped_softmax", "softmax", "all_softmax", grouped=True, renormalizes=True, scaled=True,
                   groups_optional=True),
    RoutingVariant("sigmoid_logit_bias", "logits", "picked_sigmoid", biased=True, renormalizes=True, scaled=True),
    # AXK2: the dropped groups score 0.0, and a config without n_group routes over all experts.
    RoutingVariant("grouped_zero_filled", "sigmoid", "picked_sigmoid", biased=True, grouped=True, renormalizes=True,
                   scaled=True, dropped_score=0.0, groups_optional=True),
)}
ROUTING_VARIANTS = tuple(VARIANTS)
# How a group is scored before groups are kept (grouped variants).
GROUP_SCORES = ("top2_sum", "max")


def variant(name: str) -> RoutingVariant:
    """The record of variant `name`; KeyError names the known variants."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown routing variant {name!r}; known: {', '.join(VARIANTS)}") from None
