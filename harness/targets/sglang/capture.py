"""SGLang's routed-experts capturer, sized from a config directory by SGLang's own config resolution.

SGLang sizes the capture in `RoutedExpertsCapturer.__init__` from `ModelConfig.hf_text_config` (its
`get_hf_text_config` of the config its loader reads from the directory): `num_experts_per_tok` for the top-k and
`num_hidden_layers` for the layer axis (it captures at each decoder layer's own index). Here the directory is the
config transformers writes, the ModelConfig is made from server arguments for one CPU rank
(`ModelConfig.from_server_args`, after the runtime context is published from them, as a server does at start; the
config names its model class, as a published checkpoint's does), and
the capturer is SGLang's. Its host cache is plain CPU memory here: SGLang registers that memory with CUDA
(`cudaHostRegister`) for every device but npu/musa/xpu, which a CPU-only torch cannot; the registration does not
shape the buffer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from harness.verdict import CheckSkipped, not_applicable


def _plain_host_memory(dims: tuple, dtype: torch.dtype, device: str, pin_memory: bool, allocator: Any,
                       registration_granularity_bytes: int | None = None) -> torch.Tensor:
    return torch.empty(dims, dtype=dtype, device="cpu")


@contextmanager
def _cpu_host_allocation() -> Iterator[None]:
    from sglang.srt.mem_cache.pool_host import common

    funcs = common.ALLOC_MEMORY_FUNCS
    had = "cpu" in funcs
    before = funcs.get("cpu")
    funcs["cpu"] = _plain_host_memory
    try:
        yield
    finally:
        if had:
            funcs["cpu"] = before
        else:
            del funcs["cpu"]


def model_config(directory: str) -> Any:
    """SGLang's ModelConfig of a config directory, resolved as a one-rank CPU server resolves it (the runtime context
    published from the same server arguments)."""
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.runtime_context import get_context
    from sglang.srt.server_args import ServerArgs

    # chunked_prefill_size: resolved per GPU model when not given; no GPU here, so it is given (it sizes only the
    # device cache's batch axis, not the buffer judged).
    args = ServerArgs(model_path=directory, device="cpu", skip_tokenizer_init=True, enable_return_routed_experts=True,
                      chunked_prefill_size=64)
    get_context().set_server_args(args)
    return ModelConfig.from_server_args(args)


def published_architecture(config: Any) -> str:
    """The model class a published checkpoint of `config`'s family names in its config.json (`architectures`): its
    causal LM, else its base model, as transformers' Auto classes map the config class; else the class's name spelled
    as a causal LM."""
    from transformers import AutoModel, AutoModelForCausalLM

    for auto in (AutoModelForCausalLM, AutoModel):
        if type(config) in auto._model_mapping:
            found: Any = auto._model_mapping[type(config)]
            return (found[0] if isinstance(found, tuple) else found).__name__
    return type(config).__name__.removesuffix("Config") + "ForCausalLM"


def capture_buffer(config: Any, max_tokens: int) -> torch.Tensor:
    """The host buffer SGLang's RoutedExpertsCapturer holds the routed experts of `max_tokens` tokens in, for a
    transformers config: [tokens, layers, top-k]."""
    from sglang.srt.state_capturer.routed_experts import RoutedExpertsCapturer
    from transformers import PretrainedConfig

    if not isinstance(config, PretrainedConfig):
        raise TypeError(f"SGLang resolves config directories transformers writes, not {type(config).__name__}")
    if not type(config).model_type:  # a bare PretrainedConfig: config.json gets no model_type
        raise CheckSkipped(not_applicable("SGLang resolves a served checkpoint's config by its model_type (its own "
                                          "config classes first); a config without one is no checkpoint it serves"))
    with tempfile.TemporaryDirectory(prefix="moe-harness-sglang-") as directory:
        # A checkpoint's config.json names its model class; SGLang's config resolution reads it.
        config.architectures = config.architectures or [published_architecture(config)]
        config.save_pretrained(directory)
        resolved = model_config(directory)
    with _cpu_host_allocation():
        capturer = RoutedExpertsCapturer(resolved, num_tokens=max_tokens, max_running_requests=1,
                                         num_fused_shared_experts=0, device="cpu")
    return capturer.host_cache.buffer
