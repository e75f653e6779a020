"""Seed 004 (vLLM PR 40794): unpad the routed output before adding the shared experts."""

from __future__ import annotations

from collections.abc import Callable

import torch

from reference.moe import MoEBlock, PaddedMoERunner, pad_to


def runner_buggy(block: MoEBlock, alignment: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Before the fix: the padded routed output is added to the shared output, then returned."""
    padded = PaddedMoERunner(block, alignment)

    def forward(x: torch.Tensor) -> torch.Tensor:
        hidden = x.shape[-1]
        flat = x.reshape(-1, hidden)
        routed = padded.routed_padded(flat, block.router_logits(flat), pad_to(hidden, alignment))
        shared = block.shared(flat)
        out = routed if shared is None else shared + routed
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return forward


def runner_fixed(block: MoEBlock, alignment: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """After the fix: the routed output is trimmed to the input hidden size first."""
    return PaddedMoERunner(block, alignment)
