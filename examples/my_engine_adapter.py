"""An engine's MoE routing, adapted for moe-harness: `moe-harness run --target examples.my_engine_adapter:make_target`."""

from __future__ import annotations

import torch

from harness.targets.base import RoutingCap, Target


def route(logits: torch.Tensor, knobs, *, bias=None, per_expert_scale=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the experts, keep the top k, renormalise when the config asks (Mixtral, Qwen-MoE, OLMoE)."""
    probs = torch.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(probs, knobs.top_k, dim=-1)
    if knobs.renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids.to(torch.int32)


def make_target() -> Target:
    return Target(name="my-engine", version="1.0", description="my engine's softmax top-k routing",
                  routing=RoutingCap(route, variants=("softmax_topk",)))
