"""SGLang's own MoE blocks built on the CPU as x [T, H] -> [T, H] modules (functional-call, block-parity).

Each family's block is the class its SGLang model builds for a decoder layer's MLP, constructed with the arguments the
model passes, in a process set up as one CPU rank (`runtime.one_rank`). Its router is a `TopK` op, its experts a
`FusedMoE`, which on a CPU without AMX run SGLang's torch-native path. A block's forward launches nothing else on
these families; blocks whose forward needs a GPU kernel are listed with the reason. The blocks are built by class,
the table below (whole models build too, for load-parity: `loading.py`; finding the blocks in their module trees, as
the transformers target does, is not done yet).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.targets.seeding import seed_parameters
from harness.tiny_configs import tiny_config
from harness.verdict import harness_limit, not_applicable
from reference.config import MoESpec


@dataclass(frozen=True)
class SGLangBlock:
    """One family's SGLang MoE block: `module.cls` built by `build(cls, text_config, layer_id, prefix)`."""

    family: str
    module: str  # sglang.srt.models.<module>
    cls: str
    build: Callable[[Any, Any, int, str], nn.Module]


def _by_config(cls: Any, config: Any, layer_id: int, prefix: str) -> nn.Module:
    return cls(layer_id=layer_id, config=config, quant_config=None, prefix=prefix)


def _by_sizes(experts_field: str) -> Callable[[Any, Any, int, str], nn.Module]:
    def build(cls: Any, config: Any, layer_id: int, prefix: str) -> nn.Module:
        return cls(num_experts=getattr(config, experts_field), top_k=config.num_experts_per_tok,
                   hidden_size=config.hidden_size, intermediate_size=config.intermediate_size, layer_id=layer_id,
                   params_dtype=torch.get_default_dtype(), quant_config=None, prefix=prefix)

    return build


# The MLP class each SGLang model builds for its MoE layers, with the arguments it passes (sglang/srt/models/*.py).
BLOCKS: dict[str, SGLangBlock] = {b.family: b for b in (
    SGLangBlock("qwen3_moe", "qwen3_moe", "Qwen3MoeSparseMoeBlock", _by_config),
    SGLangBlock("mixtral", "mixtral", "MixtralMoE", _by_sizes("num_local_experts")),
    SGLangBlock("olmoe", "olmoe", "OlmoeMoE", _by_sizes("num_experts")),
)}
# Blocks SGLang builds whose forward needs what a CPU does not have, with what it launches.
NEEDS_GPU: dict[str, str] = {
    "qwen2_moe": "Qwen2MoeSparseMoeBlock's forward launches a Triton kernel for its shared expert's gate "
                 "(Triton: 0 active drivers on a CPU)",
}
# SGLang registers each MoE layer under its layer id: every build takes the next one.
_LAYER_IDS = itertools.count()


class SGLangMoE(nn.Module):
    """An SGLang MoE block under the reference's interface: forward, router logits, tensors under reference names."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The block's router logits [T, E] (its gate, a ReplicatedLinear returning (output, bias))."""
        gate: Any = self.block.gate
        logits, _ = gate(x)
        return logits

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The block's tensors under the reference MoEBlock's names (NOTES §3): FusedMoE's w13 is [E, 2I, H] with the
        gate (w1) rows first, its w2 [E, H, I]."""
        block: Any = self.block
        return {"gate.weight": block.gate.weight.detach(), "experts.gate_up_proj": block.experts.w13_weight.detach(),
                "experts.down_proj": block.experts.w2_weight.detach()}


@functools.cache
def _text_config(family: str) -> Any:
    config = tiny_config(family)
    return getattr(config, "text_config", config)


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh SGLang block for the spec's family, its parameters seeded."""
    import importlib

    from harness.targets.sglang.runtime import one_rank

    entry = BLOCKS[spec.family]
    config = _text_config(spec.family)
    one_rank("qwen3_moe")  # the blocks read the config they are handed, not the published one
    cls = getattr(importlib.import_module(f"sglang.srt.models.{entry.module}"), entry.cls)
    layer = next(_LAYER_IDS)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # SGLang's layers take the default dtype for their parameters, as its loader sets it
    try:
        block = SGLangMoE(entry.build(cls, config, layer, f"model.layers.{layer}.mlp"))
    finally:
        torch.set_default_dtype(default)
    seed_parameters(block, seed)
    return block.eval()


def skip_reason(family: str) -> str | None:
    """Why SGLang has no CPU-buildable block here for `family`, or None."""
    if family in BLOCKS:
        return None
    if family in NEEDS_GPU:
        return not_applicable(NEEDS_GPU[family])
    return harness_limit(f"the sglang target builds blocks for {', '.join(BLOCKS)} (harness/targets/sglang/blocks.py); "
                         "its other MoE blocks are not wired in yet")
