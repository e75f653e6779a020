"""vLLM's own MoE modules built on the CPU as x [T, H] -> [T, H] blocks (for functional-call).

Gemma4: the decoder layer's `router` (Gemma4Router), `experts` (the MoERunner vLLM's FusedMoEFactory
builds with the router's `routing_function` as its custom routing) and the parallel dense `mlp`
(Gemma4MLP), combined as Gemma4DecoderLayer combines them, without its norms. Parameter names are
vLLM's. After vLLM's CPU weight processing the experts' tensors are repacked for its kernel, so
`reference_state` exports the tensors as they were loaded.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import torch
from torch import nn

from harness.targets.seeding import seed_parameters
from harness.targets.vllm.runtime import building, process_weights, running
from harness.tiny_configs import tiny_config
from harness.verdict import harness_limit
from reference.config import MoESpec

BLOCK_FAMILIES = ("gemma4",)
# vLLM registers every MoE layer by its prefix in the config's forward context and refuses a second
# layer under the same name, so each build takes the next layer index.
_LAYER_IDS = itertools.count()


class VllmGemma4MoE(nn.Module):
    """vLLM's Gemma4 router, routed experts and dense MLP: `experts(x, router(x)) + mlp(x)`."""

    def __init__(self, text_config: Any, layer: int = 0) -> None:
        super().__init__()
        from vllm.model_executor.layers.fused_moe import FusedMoEFactory
        from vllm.model_executor.models.gemma4 import Gemma4MLP, Gemma4Router

        prefix = f"model.layers.{layer}"
        self.router = Gemma4Router(text_config, prefix=f"{prefix}.router")
        # The arguments Gemma4DecoderLayer passes (vllm/model_executor/models/gemma4.py).
        self.experts = FusedMoEFactory(
            num_experts=text_config.num_experts,
            top_k=text_config.top_k_experts,
            hidden_size=text_config.hidden_size,
            intermediate_size=text_config.moe_intermediate_size,
            renormalize=True,
            prefix=f"{prefix}.experts",
            custom_routing_function=self.router.routing_function,
            activation="gelu_tanh",
        )
        self.mlp = Gemma4MLP(hidden_size=text_config.hidden_size, intermediate_size=text_config.intermediate_size,
                             hidden_activation=text_config.hidden_activation, prefix=f"{prefix}.mlp")
        self.loaded: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output for x [T, H], under a vLLM forward context."""
        with running():
            return self.experts(x, self.router(x)) + self.mlp(x)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """vLLM's router logits [T, E] for x (norm, 1/sqrt(H), learned scale, projection)."""
        return self.router(x)

    def snapshot(self) -> None:
        """Keep the tensors as loaded, before vLLM's processing repacks the experts for its CPU kernel."""
        self.loaded = {n: p.detach().clone() for n, p in self.named_parameters()}

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The tensors as loaded, under the reference MoEBlock's names and layouts (NOTES §3)."""
        t = self.loaded
        gate, up = t["mlp.gate_up_proj.weight"].chunk(2)  # MergedColumnParallelLinear: gate rows first
        return {
            "per_expert_scale": t["router.per_expert_scale"],
            "gate.weight": t["router.proj.weight"],
            "experts.gate_up_proj": t["experts.routed_experts.w13_weight"],  # [E, 2I, H], w1 (gate) first
            "experts.down_proj": t["experts.routed_experts.w2_weight"],
            "shared_experts.gate_proj.weight": gate,
            "shared_experts.up_proj.weight": up,
            "shared_experts.down_proj.weight": t["mlp.down_proj.weight"],
        }


@functools.cache
def _text_config(family: str) -> Any:
    config = tiny_config(family, enable_moe_block=True)
    return getattr(config, "text_config", config)


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh vLLM block for the spec's family: seeded parameters, then vLLM's weight processing."""
    if spec.family not in BLOCK_FAMILIES:
        raise ValueError(f"no vLLM block for {spec.family}; built: {', '.join(BLOCK_FAMILIES)}")
    text = _text_config(spec.family)
    if text.hidden_size != spec.hidden_size or text.num_experts != spec.num_experts:
        raise ValueError(f"{spec.family}: the tiny config ({text.hidden_size}, {text.num_experts}) "
                         f"does not match the spec ({spec.hidden_size}, {spec.num_experts})")
    with building():
        block = VllmGemma4MoE(text, next(_LAYER_IDS)).to(dtype)
    seed_parameters(block, seed)
    block.snapshot()
    process_weights(block)
    return block.eval()


def skip_reason(family: str) -> str | None:
    """Why vLLM has no CPU-buildable block here for `family`, or None."""
    if family in BLOCK_FAMILIES:
        return None
    return harness_limit(f"the vllm target builds CPU blocks only for {', '.join(BLOCK_FAMILIES)} "
                         f"(the other MoE layers are not wired in yet)")
