"""What building SGLang's modules on the CPU needs: the runtime context a server publishes at start (its server
arguments, this process as rank 0 of one) and a one-rank gloo process group with SGLang's model-parallel groups.
Imports SGLang only inside functions."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any


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
    # capturer's device cache and the prefill chunks, neither judged here).
    return ServerArgs(model_path=directory, device="cpu", dtype="float32", skip_tokenizer_init=True,
                      chunked_prefill_size=64, **fields)


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
