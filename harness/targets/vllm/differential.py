"""vLLM's side of the differential (`harness/checks/differential.py`): the checkpoint transformers writes for the
family (in the writer's process, which also runs transformers' side), served as vLLM serves it (`models.engine_config`,
one CPU rank), its model created and loaded by vLLM's own loader (`DefaultModelLoader.load_weights`), and the first MoE
block of that model (as `blocks.find` finds it) run on the input after vLLM's weight processing.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.targets.base import DifferentialRun
from harness.targets.transformers.writer import beside_the_writer


def run(family: str, seed: int, x: torch.Tensor) -> DifferentialRun:
    """The checkpoint of `family` written from `seed`, loaded by vLLM and by transformers, each block run on x."""
    return beside_the_writer(family, seed, x, lambda directory: _loaded_block_output(family, directory, x))


def _loaded_block_output(family: str, directory: Path, x: torch.Tensor) -> torch.Tensor:
    """vLLM's model of `directory` loaded by its loader; its first MoE block's output on x."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

    from harness.targets.vllm.blocks import VllmFoundMoE, find_in
    from harness.targets.vllm.models import create_model, engine_config, limits_as_skips
    from harness.targets.vllm.runtime import process_weights, vllm_config

    vllm_config()  # the process's one-rank group, which every model built here shares
    with limits_as_skips():
        config = engine_config(directory, "single")
        model = create_model(config)
    with set_current_vllm_config(config), torch.no_grad():
        DefaultModelLoader(config.load_config).load_weights(model, config.model_config)
    found = find_in(family, model)
    block = VllmFoundMoE(found, found.block, found.layer_shared, found.layer_norm, config)
    process_weights(block)
    with torch.no_grad():
        return block.eval()(x)
