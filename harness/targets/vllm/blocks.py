"""vLLM's own MoE blocks built on the CPU as x [T, H] -> [T, H] modules (functional-call, block-parity).

Found in the models vLLM's loader builds: each family's checkpoint directory (written by transformers) is served as
vLLM serves it (`models.engine_config`, one CPU rank) and its model created by vLLM's loader; its MoE block is the
first module holding a `MoERunner` (vLLM's fused experts: `routed_experts` with `w13_weight` [E, 2I, H] gate rows
first, `w2_weight` [E, H, I]) as `experts`, the class the model builds for its MoE layers with the arguments the model
passes. Each build is a copy of it, seeded, then put through vLLM's own weight processing (which repacks the experts
for its CPU kernel, so `reference_state` exports the tensors as they were before). A runner finds the layer it runs by
name in the forward context, so the copy runs under its original's name.

Gemma4, whose router and dense MLP sit on the decoder layer (its MoE is no module of its own), is assembled from
vLLM's modules as Gemma4DecoderLayer combines them, without its norms.

Where vLLM cannot build the model on this machine the block is not applicable; where the build fails otherwise it is
vLLM's error, reported by the check (a tensor the reference holds that the block lacks too); where the block holds
what the reference does not model, its forward needs more than hidden states, or it is transformers' block in vLLM's
Transformers backend that does not run on its own, it is a harness limit, each with the reason.
"""

from __future__ import annotations

import functools
import itertools
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.families import tiny_spec
from harness.targets.found_blocks import (
    FoundBlock,
    FoundMoE,
    UnmappedBlock,
    built_once,
    copies,
    find_block,
    tensors,
)
from harness.targets.seeding import seed_parameters
from harness.targets.vllm.runtime import building, process_weights, running, vllm_config
from harness.tiny_configs import tiny_config
from harness.verdict import CheckSkipped, harness_limit
from reference.config import MoESpec

# RoutedExperts' tensors (under the runner's `routed_experts`) and the reference FusedExperts' names.
EXPERT_NAMES = {"routed_experts.w13_weight": "{first}", "routed_experts.w2_weight": "down_proj",
                "routed_experts.w13_bias": "{first}_bias", "routed_experts.w2_bias": "down_proj_bias"}
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


class VllmFoundMoE(FoundMoE):
    """A MoE block found in a model vLLM built, run under its model's config, its runners found under their names."""

    def __init__(self, found: FoundBlock, block: nn.Module, layer_shared: nn.Module | None,
                 layer_norm: nn.Module | None, config: Any) -> None:
        super().__init__(found, block, layer_shared, layer_norm)
        self.config = config
        self.loaded: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vllm.model_executor.layers.fused_moe.runner.moe_runner import MoERunner

        runners = {m.layer_name: m for m in self.modules() if isinstance(m, MoERunner)}
        with running(self.config, runners):
            return super().forward(x)

    def snapshot(self) -> None:
        """Keep the tensors as loaded, before vLLM's processing repacks the experts for its CPU kernel."""
        self.loaded = {n: t.detach().clone() for n, t in tensors(self).items()}

    def held(self) -> dict[str, torch.Tensor]:
        return self.loaded


@built_once
def _model(family: str) -> tuple[nn.Module, Any]:
    """`family`'s tiny model as vLLM's loader creates it for the checkpoint transformers writes of it, with its
    VllmConfig (one CPU rank, float32); what vLLM cannot build on a CPU raises CheckSkipped (`limits_as_skips`)."""
    from harness.targets.transformers.writer import WRITER
    from harness.targets.vllm.models import create_model, engine_config, limits_as_skips

    vllm_config()  # the process's one-rank group, which every model built here shares
    directory = Path(tempfile.mkdtemp(prefix="moe-harness-vllm-block-"))
    WRITER.write(family, 0, directory)  # transformers' own classes: vLLM's import decorates those it serves
    with limits_as_skips():
        config = engine_config(directory, "single")
        return create_model(config), config


@functools.cache
def find(family: str) -> FoundBlock:
    """`family`'s first MoE block in the model vLLM builds, with its reference names."""
    return find_in(family, _model(family)[0])


def find_in(family: str, model: nn.Module) -> FoundBlock:
    """The first MoE block of `model`, a vLLM model of `family`'s config, with its reference names."""
    from vllm.model_executor.layers.fused_moe.runner.moe_runner import MoERunner

    return find_block(tiny_spec(family), model, lambda experts: isinstance(experts, MoERunner), EXPERT_NAMES)


@functools.cache
def _text_config(family: str) -> Any:
    config = tiny_config(family, enable_moe_block=True)
    return getattr(config, "text_config", config)


def _gemma4(spec: MoESpec) -> VllmGemma4MoE:
    text = _text_config(spec.family)
    if text.hidden_size != spec.hidden_size or text.num_experts != spec.num_experts:
        raise ValueError(f"{spec.family}: the tiny config ({text.hidden_size}, {text.num_experts}) "
                         f"does not match the spec ({spec.hidden_size}, {spec.num_experts})")
    with building():
        return VllmGemma4MoE(text, next(_LAYER_IDS))


# What a Transformers-backend block raises when driven alone as the harness drives it: a forward that unpacks
# [B, T, H], or a module whose forward is bound to an unprocessed module outside the block (no `cpu_linear`).
_NOT_ALONE = re.compile(r"not enough values to unpack \(expected 3, got 2\)|has no attribute 'cpu_linear'")

# Families whose MoE vLLM computes in the decoder layer itself: blocks assembled from its modules.
ASSEMBLED = {"gemma4": _gemma4}


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh vLLM block for the spec's family: seeded parameters, then vLLM's weight processing."""
    block: VllmGemma4MoE | VllmFoundMoE
    if spec.family in ASSEMBLED:
        block = ASSEMBLED[spec.family](spec).to(dtype)
    else:
        found = find(spec.family)
        block = VllmFoundMoE(found, *copies(found), _model(spec.family)[1]).to(dtype)
    seed_parameters(block, seed)
    block.snapshot()
    process_weights(block)
    return block.eval()


def skip_reason(family: str) -> str | None:
    """Why vLLM has no block here for `family` that the reference can judge, or None (a build vLLM fails on its own
    is reported by the check)."""
    if family in ASSEMBLED:
        return None
    try:
        find(family)
    except CheckSkipped as exc:  # vLLM cannot build it on a CPU, or transformers writes no checkpoint of it
        return exc.reason
    except UnmappedBlock as exc:
        return harness_limit(f"vLLM's MoE block for {family} is not one the reference models: {exc}")
    except Exception:  # noqa: BLE001 - vLLM's own error: the check reports it
        return None
    if type(find(family).block).__module__.startswith("transformers."):
        # vLLM's Transformers backend: transformers' own block with vLLM's layers put in its place. Some run alone
        # (flex_olmo, mellum); others take [B, T, H] or run forwards bound to modules outside the block.
        try:
            with torch.no_grad():
                build(tiny_spec(family))(torch.zeros(2, tiny_spec(family).hidden_size))
        except Exception as exc:  # noqa: BLE001 - only what our driving causes is a limit; the check reports the rest
            if not _NOT_ALONE.search(str(exc)):
                return None
            return harness_limit(f"{type(find(family).block).__name__} is transformers' block in vLLM's Transformers "
                                 f"backend, which does not run as a block on its own ({type(exc).__name__}: "
                                 f"{str(exc)[:160]})")
    return None
