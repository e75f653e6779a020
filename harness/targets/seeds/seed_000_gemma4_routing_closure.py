"""Seed 000 (vLLM PR 42250): Gemma4 MoE routing closure and `per_expert_scale`."""

from __future__ import annotations

import torch

from reference.config import MoESpec
from reference.moe import MoEBlock, init_block
from reference.routing import route


class CapturingGemma4Block(MoEBlock):
    """Before the fix: the routing closure holds a local reference to the Parameter."""

    def __init__(self, spec: MoESpec, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(spec, dtype)
        per_expert_scale = self.per_expert_scale
        knobs = spec.routing

        def routing_function(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return route(logits, knobs, per_expert_scale=per_expert_scale)

        self.routing_function = routing_function

    def routing(self, logits: torch.Tensor, oracle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.routing_function(logits.float())


class SelfReadingGemma4Block(MoEBlock):
    """After the fix: the closure reads `self.per_expert_scale` when it runs."""

    def __init__(self, spec: MoESpec, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(spec, dtype)
        knobs = spec.routing

        def routing_function(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return route(logits, knobs, per_expert_scale=self.per_expert_scale)

        self.routing_function = routing_function

    def routing(self, logits: torch.Tensor, oracle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.routing_function(logits.float())


def build_buggy(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> MoEBlock:
    block = CapturingGemma4Block(spec, dtype)
    init_block(block, seed)
    return block


def build_fixed(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> MoEBlock:
    block = SelfReadingGemma4Block(spec, dtype)
    init_block(block, seed)
    return block
