"""SGLang's routed-experts capturer, sized from a config directory by SGLang's own config resolution.

SGLang sizes the capture in `RoutedExpertsCapturer.__init__` from `ModelConfig.hf_text_config` (its
`get_hf_text_config` of the config its loader reads from the directory): `num_experts_per_tok` for the top-k and
`num_hidden_layers` for the layer axis (it captures at each decoder layer's own index). Here the directory holds the
config transformers writes, naming its model class as a published checkpoint's does; the ModelConfig is made from
server arguments for one CPU rank (`ModelConfig.from_server_args`, the runtime context holding the same
arguments), and the capturer is SGLang's. Its host cache is plain CPU memory here: SGLang
registers that memory with CUDA (`cudaHostRegister`) for every device but npu/musa/xpu, which a CPU-only torch
cannot; the registration does not shape the buffer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from harness.targets.sglang.runtime import write_config
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
    """SGLang's ModelConfig of a config directory, resolved from the server arguments a one-rank CPU server is given
    (installed as the runtime context's, without `publish`'s per-model deployment hooks: their attention-backend and
    Mamba-cache choices refuse a CPU for some models and do not size the capture)."""
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.runtime_context import get_context

    from harness.targets.sglang.runtime import server_args

    args = server_args(directory, enable_return_routed_experts=True)
    get_context().set_server_args(args)
    return ModelConfig.from_server_args(args)


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
        write_config(config, directory)
        resolved = model_config(directory)
    with _cpu_host_allocation():
        capturer = RoutedExpertsCapturer(resolved, num_tokens=max_tokens, max_running_requests=1,
                                         num_fused_shared_experts=0, device="cpu")
    return capturer.host_cache.buffer
