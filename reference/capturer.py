"""A routed-experts capturer: records the expert ids each token was sent to, per MoE layer."""

from __future__ import annotations

from typing import Any

import torch

from reference.config import moe_layer_indices, resolve_top_k


class RoutedExpertsCapturer:
    """Holds an int32 buffer of shape (max_tokens, num_moe_layers, top_k) for any config spelling.

    A config with no experts-per-token spelling raises ConfigError naming every accepted spelling.
    """

    def __init__(self, config: Any, max_tokens: int) -> None:
        self.top_k = resolve_top_k(config)
        self.moe_layers = moe_layer_indices(config)
        self.layer_slot = {layer: slot for slot, layer in enumerate(self.moe_layers)}
        self.buffer = torch.full((max_tokens, len(self.moe_layers), self.top_k), -1, dtype=torch.int32)

    def capture(self, layer: int, ids: torch.Tensor, start: int = 0) -> None:
        """Record ids [T, top_k] of MoE layer `layer` for tokens start..start+T."""
        if ids.shape[-1] != self.top_k:
            raise ValueError(f"ids have {ids.shape[-1]} picks per token, the capturer expects top_k={self.top_k}")
        self.buffer[start : start + ids.shape[0], self.layer_slot[layer]] = ids.to(torch.int32)
