"""torchtitan's own MoE layer built for a family's MoE spec, the way its model configs build one (router, grouped
experts, shared experts, the load-balancing bias where the routing selects with one), holding seeded weights and
exporting them under the reference names.

Its experts compute in bf16 (`GroupedExperts` casts inputs and weights for `torch._grouped_mm`), so its output is
judged at bf16 against the size of the terms it sums. `tokens_per_expert_E` is a training statistic its forward
accumulates only in training mode and never reads: declared inert, so functional-call holds it to changing nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.targets.torchtitan.routing import SCORE_FUNCTIONS, router_config
from harness.verdict import SkipReason, not_applicable
from reference.config import MoESpec
from reference.moe import init_block

INERT = {"moe.tokens_per_expert_E": "torchtitan's count of tokens per expert for load balancing: accumulated in "
                                    "training, never read by the forward"}
# How a shared MLP joins the routed output, as torchtitan builds it: plain (FeedForward) or sigmoid-gated.
SHARED_MODULES = ("none", "add", "sigmoid_gate")


def skip_reason(spec: MoESpec) -> SkipReason | None:
    """What of the spec torchtitan's MoE layer cannot express, or None when it builds it exactly."""
    lacks = []
    if spec.routing.variant not in SCORE_FUNCTIONS:
        lacks.append(f"{spec.routing.variant} routing (its router selects on softmax or sigmoid scores)")
    elif spec.routing.group_score != "top2_sum" and spec.routing.n_group is not None:
        lacks.append(f"groups scored by their {spec.routing.group_score} (it scores a group by its top-2 sum)")
    if spec.activation != "silu" or not spec.gated:
        lacks.append(f"{'' if spec.gated else 'ungated '}{spec.activation} experts (its experts are SwiGLU)")
    if spec.shared_combine not in SHARED_MODULES:
        lacks.append(f"a {spec.shared_combine} shared MLP")
    for flag, what in ((spec.router_bias, "a router bias"), (spec.expert_bias, "expert biases"),
                       (spec.weight_on_input, "the routing weight on the expert input"),
                       (spec.post_norm_eps is not None, "a norm after the block")):
        if flag:
            lacks.append(what)
    return not_applicable(f"torchtitan's MoE layer cannot express {spec.family}'s " + "; ".join(lacks)) if lacks else None


class TitanBlock(nn.Module):
    """torchtitan's MoE as x [T, H] -> [T, H], with the reference block's export contract."""

    def __init__(self, moe: nn.Module, spec: MoESpec) -> None:
        super().__init__()
        self.moe, self.spec = moe, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.moe(x[None])[0].to(x.dtype)  # type: ignore[no-any-return]

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        moe: Any = self.moe
        return moe.router.gate(x)  # type: ignore[no-any-return]

    def reference_state(self) -> dict[str, torch.Tensor]:
        """Its tensors under the reference names: the gate, gate rows then up rows of each expert, down, the
        selection bias where the routing has one, the shared MLP and its gate."""
        moe: Any = self.moe
        experts = moe.routed_experts.inner_experts
        state = {"gate.weight": moe.router.gate.weight,
                 "experts.gate_up_proj": torch.cat([experts.w1_EFD, experts.w3_EFD], dim=1),
                 "experts.down_proj": experts.w2_EDF}
        if self.spec.routing.selection_bias:
            state["e_score_correction_bias"] = moe.expert_bias_E
        shared = moe.shared_experts
        if shared is not None:
            state |= {"shared_experts.gate_proj.weight": shared.w1.weight, "shared_experts.up_proj.weight":
                      shared.w3.weight, "shared_experts.down_proj.weight": shared.w2.weight}
            if self.spec.shared_combine == "sigmoid_gate":
                state["shared_expert_gate.weight"] = shared.gate.weight
        return {k: v.detach() for k, v in state.items()}


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> TitanBlock:
    """torchtitan's MoE layer for `spec`, every parameter and float buffer seeded."""
    from torchtitan.models.common import feed_forward
    from torchtitan.models.common.config_utils import (
        make_ffn_config,
        make_moe_config,
        make_routed_experts_config,
    )

    h, experts, k = spec.hidden_size, spec.num_experts, spec.top_k
    shared = None
    if spec.shared_combine != "none":
        width = spec.shared_intermediate_size or spec.intermediate_size
        ffn = make_ffn_config(dim=h, hidden_dim=width, w1_param_init={}, w2w3_param_init={})
        shared = ffn
        if spec.shared_combine == "sigmoid_gate":
            shared = feed_forward.SigmoidGatedFeedForward.Config(
                w1=ffn.w1, w2=ffn.w2, w3=ffn.w3,
                gate=type(ffn.w1)(in_features=h, out_features=1, bias=False, param_init={}))
    moe = make_moe_config(
        num_experts=experts, router=router_config(spec.routing, experts, h),
        routed_experts=make_routed_experts_config(dim=h, hidden_dim=spec.intermediate_size, num_experts=experts,
                                                  top_k=k, param_init={}, comm_backend="standard"),
        shared_experts=shared,
        # the load-balancing bias exists where the routing selects with a bias, as in torchtitan's DeepSeek configs
        load_balance_coeff=1e-3 if spec.routing.selection_bias else None).build()
    moe.eval()  # no init_states: init_block seeds every parameter and float buffer
    return init_block(TitanBlock(moe, spec), seed).to(dtype)
