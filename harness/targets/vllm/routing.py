"""vLLM's routing as a capability: the router its MoE layers build (`create_fused_moe_router`, the factory every
`FusedMoE` calls; on a CPU platform its `CPURouter`, which says it covers every routing scheme CPU experts support),
configured for each variant as a model configures it, and the routing functions models hand to that router
(`custom_routing_function`) for the families whose vLLM model has one.

The router's own paths: softmax over every expert, with or without renormalisation over the picks (softmax_topk,
and topk_softmax, which is the renormalised case), a correction bias steering a softmax or sigmoid selection
(softmax_bias, sigmoid_bias), and the grouped routers (DeepSeek-V3's sigmoid with bias, groups scored by their top-2
sum; DeepSeek-V2's softmax, groups scored by their best expert), the routed scaling factor applied to the weights.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

import torch

from harness.targets.base import RoutingCap
from reference.variants import variant

SCORING = {"softmax_topk": "softmax", "topk_softmax": "softmax", "softmax_bias": "softmax",
           "sigmoid_bias": "sigmoid", "grouped": "sigmoid", "grouped_softmax": "softmax"}
# topk_softmax weights the picks by a softmax over their logits: the router's softmax renormalised.
ALWAYS_RENORMALIZED = ("topk_softmax",)
# How its softmax grouped router scores a group (no correction bias): by its best expert.
GROUP_SCORES_OF_SOFTMAX = ("max",)



@dataclass(frozen=True)
class CustomRouting:
    """A routing function a vLLM model hands to its router (`custom_routing_function`): where it lives, the variant
    it computes, the renormalize values it computes, and the variants the same model routes by the router's own
    paths (Cohere2-MoE hands its function for a sigmoid selection only, `expert_selection_fn`)."""

    module: str
    path: str
    claims: str
    renormalize: tuple[bool, ...] = (False, True)
    otherwise: tuple[str, ...] = ()

    def function(self) -> Any:
        return functools.reduce(getattr, self.path.split("."), importlib.import_module(self.module))


# By the families whose vLLM model hands it.
CUSTOM = {
    ("llama4", "llama4_text"): CustomRouting("vllm.model_executor.models.llama4", "Llama4MoE.custom_routing_function",
                                             "sigmoid_topk_on_logits", renormalize=(False,)),
    ("cohere2_moe",): CustomRouting("vllm.model_executor.models.cohere2_moe", "token_choice_with_bias",
                                    "sigmoid_topk_on_logits", otherwise=("topk_softmax",)),
}
GEMMA4 = ("gemma4", "gemma4_text", "diffusion_gemma", "diffusion_gemma_text")


def _device() -> str:
    """Where vLLM's routers run on this platform: its CUDA routers (Triton, its compiled ops) take CUDA tensors."""
    from vllm.platforms import current_platform

    return "cuda" if current_platform.is_cuda_alike() else "cpu"


def router(knobs: Any, experts: int, bias: torch.Tensor | None, custom: Any = None) -> Any:
    """The router vLLM's FusedMoE builds for these knobs (a variant of SCORING, or a `custom` routing function)."""
    from vllm.model_executor.layers.fused_moe.router.router_factory import create_fused_moe_router

    record = variant(knobs.variant)
    renormalize = knobs.variant in ALWAYS_RENORMALIZED or (record.renormalizes and bool(knobs.renormalize))
    return create_fused_moe_router(
        top_k=knobs.top_k,
        global_num_experts=experts,
        renormalize=renormalize,
        # A model with a grouped router builds it grouped whatever its config holds (DeepseekV2MoE, its copies): a
        # config without groups hands it none.
        use_grouped_topk=record.grouped,
        num_expert_group=knobs.n_group,
        topk_group=knobs.topk_group,
        scoring_func="softmax" if custom is not None else SCORING[knobs.variant],
        routed_scaling_factor=knobs.scaling_factor if record.scaled else 1.0,
        e_score_correction_bias=bias if record.biased else None,
        custom_routing_function=custom,
    )


def _route_with(custom: Any, logits: torch.Tensor, knobs: Any, bias: torch.Tensor | None) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    home, device = logits.device, _device()
    bias = bias.float().to(device) if bias is not None else None  # a model's correction bias is a float32 Parameter
    hidden = torch.zeros(logits.shape[0], 1, dtype=logits.dtype, device=device)  # read for its token count only
    weights, ids = router(knobs, logits.shape[-1], bias, custom).select_experts(hidden, logits.to(device))
    return weights.to(home), ids.to(home)


def route(logits: torch.Tensor, knobs: Any, *, bias: torch.Tensor | None = None,
          per_expert_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's router on logits [T, E] (in their own dtype, as a model's gate hands them): (weights, ids) [T, K]."""
    return _route_with(None, logits, knobs, bias)


def custom_route(custom: CustomRouting) -> Any:
    """The router as the model owning `custom` builds it: handed that function for the variant it claims."""
    def routed(logits: torch.Tensor, knobs: Any, *, bias: torch.Tensor | None = None,
               per_expert_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return _route_with(custom.function() if knobs.variant == custom.claims else None, logits, knobs, bias)

    routed.__qualname__ = custom.path
    return routed


def gemma4_route(logits: torch.Tensor, knobs: Any, *, bias: torch.Tensor | None = None,
                 per_expert_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's Gemma4 routing on logits [T, E]: its Triton kernel on a CUDA platform, else its torch function.

    Logits are handed over in float32, as Gemma4Router's GateLinear (out_dtype=float32) always hands them.
    """
    from vllm.model_executor.models import gemma4

    scale = per_expert_scale if per_expert_scale is not None else torch.ones(logits.shape[-1])
    if _device() == "cuda":
        home = logits.device
        weights, ids = gemma4.gemma4_fused_routing_kernel_triton(logits.float().cuda(), knobs.top_k, scale.cuda())
        return weights.to(home), ids.to(home)
    return gemma4.gemma4_routing_function_torch(logits.float(), knobs.top_k, scale)


def routing_kernel_name() -> str:
    """Which vLLM routing code `gemma4_route` runs on this machine."""
    return "gemma4_fused_routing_kernel_triton" if _device() == "cuda" else "gemma4_routing_function_torch"


@functools.cache
def for_family(family: str) -> RoutingCap | None:
    """The routing of `family`'s vLLM model where it hands the router a function of its own (None: the router's
    own paths, `capability()`)."""
    if family in GEMMA4:
        return RoutingCap(gemma4_route, ("gemma4",))
    for families, custom in CUSTOM.items():
        if family in families:
            return RoutingCap(custom_route(custom), (custom.claims, *custom.otherwise), renormalize=custom.renormalize)
    return None


def capability(runs_over: tuple[str, ...]) -> RoutingCap:
    """vLLM's routing over `runs_over`: the router's own paths, and each family's routing function where it has
    one."""
    return RoutingCap(route, tuple(SCORING), group_scores=GROUP_SCORES_OF_SOFTMAX, for_family=for_family,
                      runs_over=runs_over)
