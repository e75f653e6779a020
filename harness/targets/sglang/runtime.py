"""What building SGLang's modules on the CPU needs: the runtime context a server publishes at start (its server
arguments, this process as rank 0 of one) and a one-rank gloo process group with SGLang's model-parallel groups.
Imports SGLang only inside functions."""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from harness.verdict import SkipReason, harness_limit, not_applicable

# What SGLang raises where it cannot build a model on this machine: parts that need a GPU or its kernels (some
# layers look up the accelerator at construction), attention backends only GPUs have.
CPU_LIMITS = re.compile(r"Torch not compiled with CUDA|CUDA is not available|Found no NVIDIA driver|sgl_kernel|"
                        r"0 active drivers|No accelerator \(CUDA|One of the attention backends in .* is required for")
# Where it implements no model for the architecture and its Transformers backend cannot drive transformers' model.
UNSUPPORTED = re.compile(r"has no SGlang implementation and the Transformers implementation is not compatible")
# Where the architecture our checkpoint names (transformers' class name) is not one SGLang serves under that name, so
# its Transformers backend is handed SGLang's own config class for the model type.
NOT_SERVED_AS_NAMED = re.compile(r"Unrecognized configuration class .* for this kind of AutoModel")


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


def write_config(config: Any, directory: str) -> None:
    """Save `config` to `directory` as a checkpoint's config.json: naming its model class, which SGLang's config
    resolution reads (`architectures`)."""
    config.save_pretrained(directory)
    path = Path(directory) / "config.json"
    written = json.loads(path.read_text())
    if not written.get("architectures"):  # named in the file, the drawn config left as it was
        path.write_text(json.dumps({**written, "architectures": [published_architecture(config)]}, indent=2))


def server_args(directory: str, **fields: Any) -> Any:
    """SGLang's ServerArgs for serving the config directory on one CPU rank in float32, without a tokenizer."""
    from sglang.srt.server_args import ServerArgs

    # chunked_prefill_size: resolved per GPU model when not given; no GPU here, so it is given (it sizes the
    # capturer's device cache and the prefill chunks, neither judged here). Hybrid (Mamba) models: SGLang resolves the
    # radix cache to snapshot Mamba states ("extra_buffer"), which only GPU platforms support; a CPU server runs
    # without them, and so without the overlap schedule (no effect on weights or blocks).
    return ServerArgs(model_path=directory, device="cpu", dtype="float32", skip_tokenizer_init=True,
                      chunked_prefill_size=64, mamba_radix_cache_strategy="no_buffer", disable_overlap_schedule=True,
                      **fields)


@functools.cache
def one_rank(family: str) -> None:
    """This process as rank 0 of a one-rank gloo group with SGLang's model-parallel groups, its runtime context
    published from server arguments for `family`'s tiny config (its model is never built)."""
    from sglang.srt.distributed import parallel_state
    from sglang.srt.runtime_context import SpawnRanks, publish

    from harness.tiny_configs import tiny_config

    directory = tempfile.mkdtemp(prefix="moe-harness-sglang-runtime-")
    write_config(tiny_config(family), directory)
    publish(server_args(directory), role="scheduler", ranks=SpawnRanks(world_rank=0))  # as a scheduler process does
    fd, path = tempfile.mkstemp(prefix="moe-harness-sglang-dist-")
    os.close(fd)
    parallel_state.init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                                distributed_init_method=f"file://{path}", backend="gloo")
    parallel_state.initialize_model_parallel()


def build_model(args: Any) -> tuple[Any, Any]:
    """The model SGLang's loader builds for `args` (its registry's class, `_initialize_model`), on the CPU in the
    config's dtype, its weights not loaded; and the `ModelConfig` it was built from."""
    import torch
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.loader import _get_quantization_config, _initialize_model
    from sglang.srt.model_loader.utils import set_default_torch_dtype

    model_config = ModelConfig.from_server_args(args)
    load_config = LoadConfig(load_format="safetensors")
    with set_default_torch_dtype(model_config.dtype), torch.device("cpu"):
        model = _initialize_model(model_config, load_config, _get_quantization_config(model_config, load_config))
    return model, model_config


def build_limit(exc: BaseException) -> SkipReason | None:
    """Why SGLang's failure to build a model is not its defect, or None: an accelerator or GPU kernels needed, an
    architecture it does not implement, a class name it does not serve our checkpoint under."""
    message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    if CPU_LIMITS.search(str(exc)):
        return not_applicable(f"SGLang builds this model only with an accelerator or its GPU kernels ({message})")
    if UNSUPPORTED.search(str(exc)):
        return not_applicable(f"SGLang implements no model for this architecture that its Transformers backend can "
                              f"drive ({message})")
    if NOT_SERVED_AS_NAMED.search(str(exc)):
        return harness_limit(f"our checkpoint names transformers' model class, which SGLang does not serve under that "
                             f"name (its Transformers backend then fails: {message[:160]})")
    return None
