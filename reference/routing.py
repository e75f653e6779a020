"""The routing variants of NOTES §2 as pure torch functions.

A variant is two rules: which score selects the top K (`selection_scores`), and what weight a selected
expert gets (`weights_for`). Every variant maps logits [T, E] to (weights float32 [T, K], ids int32 [T, K]). Computation runs in
float32 (sigmoid weights in float64, see `weights_for`), or float64 with `oracle=True` (weights are then returned in
float64). Ties are broken by the
lower expert index (a stable descending sort), so the reference is deterministic.
"""

from __future__ import annotations

import torch

from reference.config import RoutingKnobs
from reference.variants import GROUP_SCORES, ROUTING_VARIANTS, variant


class RoutingInputError(ValueError):
    """Logits or knobs that no routing can accept (K > E, wrong rank, missing tensors)."""


def topk_stable(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along the last dim, descending; among equal values the lower index comes first."""
    sorted_vals, order = torch.sort(values, dim=-1, descending=True, stable=True)
    return sorted_vals[..., :k], order[..., :k]


def _renorm(w: torch.Tensor) -> torch.Tensor:
    return w / w.sum(dim=-1, keepdim=True)


def _grouped_choice(scores: torch.Tensor, knobs: RoutingKnobs, picked: torch.Tensor | None = None,
                    slack: float = 0.0) -> torch.Tensor:
    if knobs.n_group is None or knobs.topk_group is None:
        return scores  # no grouping (DeepSeek-V2's plain greedy)
    t, e = scores.shape
    size = e // knobs.n_group
    per_group = scores.view(t, knobs.n_group, size)
    if knobs.group_score == "max":
        group_score = per_group.amax(-1)
    else:  # top2_sum
        group_score = topk_stable(per_group, min(2, size))[0].sum(-1)
    holds_pick = None
    if picked is not None:
        holds_pick = torch.zeros(t, knobs.n_group, dtype=torch.bool, device=scores.device)
        holds_pick.scatter_(1, picked.long().to(scores.device) // size, True)
    keep = _kept_groups(group_score, knobs.topk_group, holds_pick, slack)
    mask = torch.zeros(t, knobs.n_group, dtype=torch.bool, device=scores.device).scatter_(1, keep, True)
    return per_group.masked_fill(~mask[..., None], variant(knobs.variant).dropped_score).view(t, e)


def _kept_groups(group_score: torch.Tensor, topk_group: int, holds_pick: torch.Tensor | None,
                 slack: float) -> torch.Tensor:
    """The indices [T, topk_group] of the groups kept: the best, the lower index first among equals. Groups tied at
    the keep boundary (within `slack` of the token's largest |group score|, of the topk_group-th best) may each be
    kept; where `holds_pick`
    [T, n_group] marks the groups a router picked from, the tied ones it marks come first, so a router that broke
    the tie another way is judged on the groups it kept."""
    order = topk_stable(group_score, group_score.shape[1])[1]
    if holds_pick is None:
        return order[:, :topk_group]
    boundary = group_score.gather(1, order[:, topk_group - 1:topk_group])
    margin = slack * group_score.abs().nan_to_num(0, 0, 0).amax(-1, keepdim=True)
    above = group_score > boundary + margin
    tied = ~above & (group_score >= boundary - margin)
    # Rank: clearly above the boundary, then tied and picked from, then tied, then the rest; by score within each.
    rank = above.long() * 3 + (tied & holds_pick).long() * 2 + tied.long()
    by_score_rank = rank.gather(1, order)
    return order.gather(1, torch.sort(by_score_rank, dim=1, descending=True, stable=True)[1])[:, :topk_group]


_SCORES = {"softmax": lambda x: torch.softmax(x, dim=-1), "sigmoid": torch.sigmoid, "logits": lambda x: x}


def selection_scores(logits: torch.Tensor, knobs: RoutingKnobs, bias: torch.Tensor | None = None,
                     picked: torch.Tensor | None = None, slack: float = 0.0) -> torch.Tensor:
    """The per-expert score whose top K are selected (bias only steers selection). Grouped variants: experts outside
    the kept groups score the variant's dropped score; with `picked` (a router's ids [T, K]), groups tied at the keep
    boundary (within the fraction `slack`) are kept as that router kept them (see `_kept_groups`)."""
    rule = variant(knobs.variant)
    scores = _SCORES[rule.score](logits)
    if rule.biased:
        assert bias is not None
        scores = scores + bias.to(logits.dtype)
    return _grouped_choice(scores, knobs, picked, slack) if rule.grouped else scores


def weights_for(
    logits: torch.Tensor,
    ids: torch.Tensor,
    knobs: RoutingKnobs,
    per_expert_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The routing weights the variant gives the experts `ids` [T, K] (whichever way they were chosen), in the
    logits' dtype. Sigmoid weights are computed in float64 whatever that dtype: a float32 sigmoid is 0 below a
    logit of about -104 (float64's: -709), and renormalising a token whose picks all lie there would divide 0 by 0
    where the weights are defined (fp16 logits reach -65504)."""
    rule = variant(knobs.variant)
    ids = ids.long()
    if rule.weight == "all_softmax":  # the unbiased probabilities of the picks
        w = torch.softmax(logits, dim=-1).gather(-1, ids)
    elif rule.weight == "picked_softmax":
        w = torch.softmax(logits.gather(-1, ids), dim=-1)
    else:  # picked_sigmoid
        w = torch.sigmoid(logits.gather(-1, ids).double())
    if rule.per_expert_scale:
        # Scale after the softmax over the selected K, so sum(w / scale[ids]) == 1.
        assert per_expert_scale is not None
        w = w * per_expert_scale.to(w.dtype)[ids]
    if rule.renormalizes and knobs.renormalize:
        w = _renorm(w)
    return (w * knobs.scaling_factor if rule.scaled else w).to(logits.dtype)


def validate_routing_inputs(logits: torch.Tensor, knobs: RoutingKnobs) -> None:
    """Raise RoutingInputError unless logits are [T, E] floats, 0 < K <= E, and the knobs fit the variant."""
    if logits.dim() != 2:
        raise RoutingInputError(f"logits must be [tokens, experts], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise RoutingInputError(f"logits must be floating point, got {logits.dtype}")
    num_experts = logits.shape[-1]
    if not 0 < knobs.top_k <= num_experts:
        raise RoutingInputError(f"top_k={knobs.top_k} must lie in 1..num_experts={num_experts}")
    if knobs.variant not in ROUTING_VARIANTS:
        raise RoutingInputError(f"unknown routing variant {knobs.variant!r}; known: {', '.join(ROUTING_VARIANTS)}")
    if variant(knobs.variant).grouped:
        _validate_groups(knobs, num_experts)
    if knobs.group_score not in GROUP_SCORES:
        raise RoutingInputError(f"group_score={knobs.group_score!r} is not one of {', '.join(GROUP_SCORES)}")


def _validate_groups(knobs: RoutingKnobs, num_experts: int) -> None:
    """Groups given both or neither (`grouped` needs them), dividing the experts, their kept experts holding K."""
    rule = variant(knobs.variant)
    if rule.grouped and not rule.groups_optional and (knobs.n_group is None or knobs.topk_group is None):
        raise RoutingInputError(f"{knobs.variant} routing needs n_group and topk_group")
    if (knobs.n_group is None) != (knobs.topk_group is None):
        raise RoutingInputError(f"n_group={knobs.n_group} and topk_group={knobs.topk_group}: give both or neither")
    if knobs.n_group is None or knobs.topk_group is None:
        return
    if num_experts % knobs.n_group:
        raise RoutingInputError(f"n_group={knobs.n_group} must divide num_experts={num_experts}")
    kept = knobs.topk_group * (num_experts // knobs.n_group)
    if not 0 < knobs.topk_group <= knobs.n_group or knobs.top_k > kept:
        raise RoutingInputError(f"top_k={knobs.top_k} must fit the {kept} experts of the topk_group="
                                f"{knobs.topk_group} kept groups of n_group={knobs.n_group}")


def route(
    logits: torch.Tensor,
    knobs: RoutingKnobs,
    *,
    bias: torch.Tensor | None = None,
    per_expert_scale: torch.Tensor | None = None,
    oracle: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Route logits [T, E] with `knobs`: weights [T, K] (float32, float64 if oracle) and ids int32 [T, K]."""
    validate_routing_inputs(logits, knobs)
    dtype = torch.float64 if oracle else torch.float32
    num_experts = logits.shape[-1]
    extra: dict[str, torch.Tensor] = {}
    if variant(knobs.variant).biased:
        extra["bias"] = (bias if bias is not None else torch.zeros(num_experts)).to(logits.device, dtype)
    if variant(knobs.variant).per_expert_scale:
        if per_expert_scale is None:
            raise RoutingInputError("gemma4 routing needs per_expert_scale [num_experts]")
        extra["per_expert_scale"] = per_expert_scale.to(logits.device, dtype)
    logits = logits.to(dtype)
    _, ids = topk_stable(selection_scores(logits, knobs, extra.get("bias")), knobs.top_k)
    return weights_for(logits, ids, knobs, extra.get("per_expert_scale")).to(dtype), ids.to(torch.int32)
