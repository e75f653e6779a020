"""Seed 001 (vLLM PR 41401): the routed-experts capturer reading experts-per-token."""

from __future__ import annotations

from typing import Any

import torch

from reference.config import moe_layer_indices


def _text_config(hf_config: Any) -> Any:
    # vLLM hands the capturer the text config of a multimodal model.
    return getattr(hf_config, "text_config", None) or hf_config


def buffer_buggy(hf_config: Any, max_tokens: int) -> torch.Tensor:
    """Before the fix: only `num_experts_per_tok` is read."""
    top_k = _text_config(hf_config).num_experts_per_tok
    return torch.zeros(max_tokens, len(moe_layer_indices(hf_config)), top_k, dtype=torch.int32)


def _get_num_experts_per_tok(hf_config: Any) -> int:
    val = getattr(hf_config, "num_experts_per_tok", None)
    if val is None:
        val = getattr(hf_config, "top_k_experts", None)
    if val is None:
        raise ValueError("Cannot determine num_experts_per_tok: HF config has neither "
                         "'num_experts_per_tok' nor 'top_k_experts'")
    return val


def buffer_fixed(hf_config: Any, max_tokens: int) -> torch.Tensor:
    """After the fix: `num_experts_per_tok`, then `top_k_experts`, else a ValueError."""
    top_k = _get_num_experts_per_tok(_text_config(hf_config))
    return torch.zeros(max_tokens, len(moe_layer_indices(hf_config)), top_k, dtype=torch.int32)
