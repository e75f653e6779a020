"""torchtitan's state-dict converters as the converter-roundtrip check sees them.

- The transformers backend's `hf_to_titan_moe_state_dict` / `titan_to_hf_moe_state_dict`: for every transformers MoE
  family, from the family's block as its checkpoint holds it (Hugging Face side). They pass the keys they have no rule
  for through unchanged (their documented contract), so they are also held to idempotence.
- Each model's `*StateDictAdapter.from_hf / to_hf` (torchtitan's import and export of published checkpoints), from the
  torchtitan model's own state dict (engine side): its debug flavor, cut after the first MoE layer, as torchtitan
  builds it. MODEL_ADAPTERS says which transformers family each one converts; every torchtitan model with an MoE
  flavor must be listed there (a test holds it), so a new one is covered, not silently left out.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

import torch

from harness.targets.base import StateDict, StateDictConverter

# torchtitan model package -> (its MoE debug flavor, the transformers family its checkpoints are)
MODEL_ADAPTERS = {
    "qwen3": ("debugmodel_moe", "qwen3_moe"),
    "qwen3_5": ("debugmodel_moe", "qwen3_5_moe"),
    "deepseek_v3": ("debugmodel", "deepseek_v3"),
    "kimi_k2_7": ("debugmodel", "kimi_k25"),
    "gpt_oss": ("debugmodel", "gpt_oss"),
}


def backend_converter(family: str) -> StateDictConverter:
    """The transformers backend's converter pair over the family's block (built with each drawn seed)."""
    from torchtitan.experiments.transformers_modeling_backend import state_dict_adapter as backend

    from harness.families import tiny_spec
    from harness.targets.torchtitan.swap import block_checkpoint
    from harness.targets.transformers import build

    def state(seed: int) -> StateDict:
        return block_checkpoint(build(tiny_spec(family), seed))

    return StateDictConverter("hf_to_titan_moe_state_dict / titan_to_hf_moe_state_dict", "hf", state,
                              backend.hf_to_titan_moe_state_dict, backend.titan_to_hf_moe_state_dict,
                              passes_through=True)


@functools.cache
def _model(package: str) -> tuple[Any, Any, dict[str, tuple[torch.Size, torch.dtype]]]:
    """(adapter class, model config cut after its first MoE layer, the model's state dict shapes and dtypes)."""
    flavor, _ = MODEL_ADAPTERS[package]
    spec = importlib.import_module(f"torchtitan.models.{package}").model_registry(flavor)
    layers = spec.model.layers
    first_moe = next(i for i, layer in enumerate(layers) if getattr(layer, "moe", None) is not None)
    config = dataclasses.replace(spec.model, layers=layers[:first_moe + 1])
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in config.build().state_dict().items()}
    return spec.state_dict_adapter, config, shapes


def model_converter(package: str) -> StateDictConverter:
    """The model's StateDictAdapter, from its own (cut) model's state dict with seeded distinct tensors."""
    adapter_class, config, shapes = _model(package)
    flavor, _ = MODEL_ADAPTERS[package]

    def state(seed: int) -> StateDict:
        gen = torch.Generator().manual_seed(seed)
        return {k: torch.randn(shape, generator=gen).to(dtype) for k, (shape, dtype) in shapes.items()}

    def adapter() -> Any:  # a fresh one per call: to_hf records metadata that from_hf then reads
        return adapter_class(config, None)

    return StateDictConverter(f"{adapter_class.__name__} ({package} {flavor}, {len(config.layers)} layers)", "engine",
                              state, lambda sd: adapter().from_hf(sd), lambda sd: adapter().to_hf(sd))


def converters(family: str) -> tuple[StateDictConverter, ...]:
    """The model adapters that convert this family (torchtitan's import and export of its published checkpoints),
    then the backend's converter over the family's block."""
    return (*(model_converter(package) for package, (_, hf_family) in MODEL_ADAPTERS.items() if hf_family == family),
            backend_converter(family))
