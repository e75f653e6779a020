"""torchtitan's `TokenChoiceTopKRouter` as a routing capability: the router built for the knobs (score function,
renormalisation, scale, node-limited groups), its gate linear replaced by the identity so the logits reach its
score function as given (an identity matrix would turn an infinite logit into NaN), and the selection bias handed
to it as its MoE hands `expert_bias_E`.

Its variants are the ones its score functions express exactly: softmax or sigmoid over all experts, a bias on the
scores for selection only, groups scored by the sum of their top two. Variants that select on the raw logits
(topk_softmax, sigmoid_topk_on_logits) are not among them: it selects on the scores, which saturate where the
logits still differ.
"""

from __future__ import annotations

from typing import Any

import torch

from reference.variants import variant

SCORE_FUNCTIONS = {"softmax_topk": "softmax", "softmax_bias": "softmax", "sigmoid_bias": "sigmoid", "grouped": "sigmoid"}


def router_config(knobs: Any, experts: int, dim: int) -> Any:
    """torchtitan's router config for the routing knobs (a variant of SCORE_FUNCTIONS) over `experts` experts."""
    from torchtitan.models.common.config_utils import make_router_config

    record = variant(knobs.variant)
    grouped = record.grouped and knobs.n_group is not None
    return make_router_config(
        dim=dim, num_experts=experts, gate_param_init={}, top_k=knobs.top_k,
        score_func=SCORE_FUNCTIONS[knobs.variant],  # type: ignore[arg-type]
        route_norm=record.renormalizes and bool(knobs.renormalize),
        route_scale=knobs.scaling_factor if record.scaled else 1.0,
        num_expert_groups=knobs.n_group if grouped else None, num_limited_groups=knobs.topk_group if grouped else None)


def route(logits: torch.Tensor, knobs: Any, *, bias: torch.Tensor | None = None,
          per_expert_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """torchtitan's routing of logits [T, E]: weights float32 [T, K], ids int32 [T, K] (its own are int64)."""
    experts = logits.shape[-1]
    router = router_config(knobs, experts, experts).build()
    router.gate = torch.nn.Identity()
    selection_bias = bias.float() if variant(knobs.variant).biased and bias is not None else None
    with torch.no_grad():
        weights, ids, _ = router(logits.float()[None], selection_bias)
    return weights[0].float(), ids[0].to(torch.int32)
