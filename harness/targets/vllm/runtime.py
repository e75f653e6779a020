"""What building and running vLLM modules on the CPU needs: one gloo process group, a forward context,
and the CPU build's weight processing (NOTES §7). Imports vLLM only inside functions.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


@functools.cache
def vllm_config() -> Any:
    """The process's one default VllmConfig, with a one-rank gloo group and model parallel of 1 set up."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    config = VllmConfig()
    with set_current_vllm_config(config):
        fd, path = tempfile.mkstemp(prefix="moe-harness-vllm-dist-")
        os.close(fd)
        init_distributed_environment(world_size=1, rank=0, distributed_init_method=f"file://{path}",
                                     local_rank=0, backend="gloo")
        initialize_model_parallel(1, 1)
    return config


@contextmanager
def building() -> Iterator[Any]:
    """Inside: vLLM layers can be constructed (current vLLM config set, process group up)."""
    from vllm.config import set_current_vllm_config

    config = vllm_config()
    with set_current_vllm_config(config):
        yield config


@contextmanager
def running(config: Any = None, moe_layers: dict[str, nn.Module] | None = None) -> Iterator[None]:
    """Inside: vLLM layers built under `config` (default: the process's) can run forward (no attention metadata; MoE
    runners need the context). A MoE runner finds the layer it runs by its name in the context (`moe_layers` adds or
    replaces those: a copy of a built layer is found under the name of the layer it copies), not by position."""
    from vllm.config import set_current_vllm_config
    from vllm.forward_context import get_forward_context, set_forward_context

    config = config if config is not None else vllm_config()
    with set_current_vllm_config(config), set_forward_context(None, config):
        context = get_forward_context()
        context.no_compile_layers = {**context.no_compile_layers, **(moe_layers or {})}
        context.all_moe_layers = None
        yield


def process_weights(module: nn.Module) -> None:
    """Run vLLM's own after-loading processing on every layer that has a quant method, as its loader does.

    Linear layers are marked `_cpu_skip_gemm_dispatch`, vLLM's own switch (set for MLA's kv_b_proj) that
    keeps them on `F.linear(x, layer.weight)`: the packed CPU GEMMs otherwise drop the weight argument,
    so no substitution of a Linear weight could reach the output (NOTES §7).
    """
    from vllm.model_executor.layers.linear import LinearBase

    for sub in list(module.modules()):
        method = getattr(sub, "quant_method", None)
        if method is None or not hasattr(method, "process_weights_after_loading"):
            continue
        if isinstance(sub, LinearBase):
            sub._cpu_skip_gemm_dispatch = True
        method.process_weights_after_loading(sub)


@contextmanager
def inspection_in_process() -> Iterator[None]:
    """Inside: vLLM's registry inspects a model class in this process instead of a fresh Python (`_run_in_subprocess`,
    there only so that a CUDA machine's parent never initialises CUDA; a CPU process has none). Same result, written
    to the same cache; spares the fresh import of vLLM (about 30 s here) per architecture not inspected before."""
    from vllm.model_executor.models import registry

    spawning = registry._run_in_subprocess
    registry._run_in_subprocess = lambda fn: fn()
    try:
        yield
    finally:
        registry._run_in_subprocess = spawning
