"""SGLang's routing as a capability: `select_experts`, the function every SGLang MoE block's `TopK` op calls, given the
`TopKConfig` a model builds for the variant's knobs, on the path that runs without SGLang's compiled kernels (its
TopK's native forward: `torch_native`, and the torch grouped routers `grouped_topk_gpu` and
`biased_grouped_topk_gpu`, whose names say where they are fast, not where they run), and the raw-logits router it
runs for the FlashInfer TRT-LLM routed runner.

The variants are the ones those paths compute: softmax or sigmoid over every expert, with a correction bias steering
the selection, the DeepSeek-V3 grouped router (sigmoid, bias, groups scored by their top-2 sum) and the DeepSeek-V2
one (softmax, groups scored by their best expert), and top-k on the raw logits with a softmax over the picks. The
routed scaling factor is applied to the weights
(`apply_routed_scaling_factor_on_output`), as the models that fold it into routing ask.
"""

from __future__ import annotations

from typing import Any

import torch

from reference.variants import variant

SCORING = {"softmax_topk": "softmax", "softmax_bias": "softmax", "sigmoid_bias": "sigmoid", "grouped": "sigmoid",
           "grouped_softmax": "softmax", "topk_softmax": "softmax"}
# Selected on the raw logits, weighted by a softmax over the picks: the router select_experts runs for the FlashInfer
# TRT-LLM routed runner (`fused_topk_softmax_torch_raw_logits`, plain torch), its `renormalize` meaning that softmax.
RAW_LOGITS = "topk_softmax"
# How its softmax grouped router (grouped_topk_gpu, DeepSeek-V2's) scores a group: by its best expert. (The biased
# sigmoid one scores a group by its top 2, what the grouped variant always asks.)
GROUP_SCORES_OF_SOFTMAX = ("max",)


def topk_config(knobs: Any, bias: torch.Tensor | None) -> Any:
    """The TopKConfig an SGLang model builds for these routing knobs (a variant of SCORING)."""
    from sglang.srt.layers.moe.topk import TopKConfig
    from sglang.srt.layers.moe.utils import MoeRunnerBackend

    if knobs.variant == RAW_LOGITS:
        return TopKConfig(top_k=knobs.top_k, renormalize=True, scoring_func="softmax",
                          runner_backend=MoeRunnerBackend.FLASHINFER_TRTLLM_ROUTED)
    record = variant(knobs.variant)
    grouped = record.grouped and knobs.n_group is not None
    return TopKConfig(
        top_k=knobs.top_k,
        use_grouped_topk=grouped,
        num_expert_group=knobs.n_group if grouped else None,
        topk_group=knobs.topk_group if grouped else None,
        renormalize=bool(knobs.renormalize) if record.renormalizes else False,
        correction_bias=bias if record.biased else None,
        scoring_func=SCORING[knobs.variant],
        routed_scaling_factor=knobs.scaling_factor if record.scaled else None,
        apply_routed_scaling_factor_on_output=record.scaled,
        torch_native=True,
    )


def route(logits: torch.Tensor, knobs: Any, *, bias: torch.Tensor | None = None,
          per_expert_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SGLang's routing of logits [T, E] (in their own dtype, as a model's gate hands them): weights float32 [T, K],
    ids int32 [T, K] (its native path gives int64 ids)."""
    from sglang.srt.layers.moe.topk import select_experts

    hidden = torch.zeros(logits.shape[0], 1, dtype=logits.dtype)  # read for its token count only
    out = select_experts(hidden, logits, topk_config(knobs, bias))
    return out.topk_weights.float(), out.topk_ids.to(torch.int32)
