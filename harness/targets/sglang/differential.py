"""SGLang's side of the differential (`harness/checks/differential.py`): the checkpoint transformers writes for the
family (in the writer's process, which also runs transformers' side: SGLang's import registers config classes over
transformers' own), served as its scheduler serves it on one CPU rank (`runtime.server_args`, published last-wins),
its model built by its loader (`runtime.build_model`) and loaded as `load_model` loads it (`load_weights_only` over
the safetensors iterator), and the first MoE block of that model (as `blocks.find` finds it) run on the input.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.targets.base import DifferentialRun
from harness.targets.found_blocks import FoundMoE
from harness.targets.transformers.writer import beside_the_writer


def skip_reason(family: str) -> str | None:
    """Why SGLang has no block for `family` here (`blocks.skip_reason`), or its loader cannot read the checkpoint as
    transformers writes it (`loading.skip_reason`), or None."""
    from harness.targets.sglang import blocks, loading

    return loading.skip_reason(family) or blocks.skip_reason(family)


def run(family: str, seed: int, x: torch.Tensor) -> DifferentialRun:
    """The checkpoint of `family` written from `seed`, loaded by SGLang and by transformers, each block run on x."""
    return beside_the_writer(family, seed, x, lambda directory: _loaded_block_output(family, directory, x))


def _loaded_block_output(family: str, directory: Path, x: torch.Tensor) -> torch.Tensor:
    """SGLang's model of `directory` built and loaded by its loader in this process; its first MoE block's output."""
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.model_loader.loader import DefaultModelLoader
    from sglang.srt.runtime_context import SpawnRanks, publish

    from harness.targets.sglang.blocks import find_in
    from harness.targets.sglang.runtime import build_model, one_rank, server_args

    one_rank("qwen3_moe")
    args = server_args(str(directory))
    publish(args, role="scheduler", ranks=SpawnRanks(world_rank=0))  # as its scheduler does (last publish wins)
    model, model_config = build_model(args)
    loader = DefaultModelLoader(LoadConfig(load_format="safetensors"))
    with torch.no_grad():
        loader.load_weights_only(model, loader._get_all_weights(model_config, model), torch.device("cpu"))
    found = find_in(family, model)
    block = FoundMoE(found, found.block, found.layer_shared, found.layer_norm)
    with torch.no_grad():
        return block.eval()(x)
