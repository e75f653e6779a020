"""vLLM's routed-experts capturer, sized from a transformers config by vLLM's own config resolution.

vLLM sizes the buffer in `RoutedExpertsCapturer.__init__` from `ModelConfig.get_total_num_hidden_layers`
and `get_num_experts_per_tok`, which read the `ModelArchitectureConfig` its convertor derives from
`get_hf_text_config(hf_config)`. A ModelConfig is normally built from a checkpoint directory, so here
one is made without running its __init__ and given exactly the fields those methods read; every
step that resolves the config (text sub-config, convertor, getters, capturer) is vLLM's.
"""

from __future__ import annotations

import types
from typing import Any

import torch


def _model_config(hf_config: Any) -> Any:
    """A vllm ModelConfig carrying hf_config, its text config and the architecture config vLLM derives."""
    from vllm.config import ModelConfig
    from vllm.transformers_utils.config import get_hf_text_config
    from vllm.transformers_utils.model_arch_config_convertor import (
        MODEL_ARCH_CONFIG_CONVERTORS,
        ModelArchConfigConvertorBase,
    )

    text = get_hf_text_config(hf_config)
    convertor = MODEL_ARCH_CONFIG_CONVERTORS.get(getattr(hf_config, "model_type", ""), ModelArchConfigConvertorBase)
    model_config = object.__new__(ModelConfig)
    vars(model_config).update(hf_config=hf_config, hf_text_config=text,
                              model_arch_config=convertor(hf_config, text).convert())
    return model_config


def capture_buffer(config: Any, max_tokens: int) -> torch.Tensor:
    """The device buffer vLLM's RoutedExpertsCapturer allocates for `config` (a transformers config)."""
    from transformers import PretrainedConfig
    from vllm.model_executor.layers.fused_moe.routed_experts_capturer import RoutedExpertsCapturer

    from harness.targets.vllm.runtime import vllm_config

    if not isinstance(config, PretrainedConfig):
        raise TypeError(f"vLLM resolves transformers configs, not {type(config).__name__}")
    vllm_cfg = types.SimpleNamespace(model_config=_model_config(config), parallel_config=vllm_config().parallel_config)
    return RoutedExpertsCapturer(max_tokens, vllm_cfg).device_buffer  # type: ignore[arg-type]
