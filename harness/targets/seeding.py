"""Seeded weights for an engine's own modules built on the CPU (the vllm and sglang targets' blocks)."""

from __future__ import annotations

import torch
from torch import nn


def seed_parameters(module: nn.Module, seed: int, scale: float = 0.5) -> None:
    """Every parameter gets seeded normal values (`per_expert_scale` positive, around 1); buffers keep the engine's
    values, since the non-persistent ones are constants such as vLLM's Gemma4 1/sqrt(H)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("per_expert_scale"):
                values = torch.rand(param.shape, generator=gen, dtype=torch.float64) + 0.5
            else:
                fan_in = param.shape[-1] if param.dim() > 1 else 1
                values = torch.randn(param.shape, generator=gen, dtype=torch.float64) * scale / fan_in**0.5
            param.copy_(values.to(param.dtype))
