"""MoE families as data: discovered from the installed transformers, each shrunk to a tiny config.

A family record (OpInfo style) holds its model_type, the routing variant its config resolves to,
its legacy checkpoint key schema and any scoped tolerance overrides.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.tolerances import Tolerance
from reference.checkpoint import KeySchema
from reference.config import (
    EXPERT_WIDTH_SPELLINGS,
    HIDDEN_SPELLINGS,
    NESTING_PATHS,
    NUM_EXPERTS_SPELLINGS,
    NUM_LAYERS_SPELLINGS,
    SHARED_WIDTH_SPELLINGS,
    TOP_K_SPELLINGS,
    MoESpec,
    resolve_moe_spec,
)

# Small values for every size field a config may carry; only fields the config already has are set.
TINY_FIELDS: dict[str, Any] = {
    **dict.fromkeys(NUM_EXPERTS_SPELLINGS, 8),
    **dict.fromkeys(TOP_K_SPELLINGS, 2),
    **dict.fromkeys(HIDDEN_SPELLINGS, 32),
    **dict.fromkeys(EXPERT_WIDTH_SPELLINGS, 16),
    **dict.fromkeys(SHARED_WIDTH_SPELLINGS, 16),
    **dict.fromkeys(NUM_LAYERS_SPELLINGS, 2),
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "vocab_size": 128,
    "max_position_embeddings": 128,
    "n_group": 2,
    "num_expert_group": 2,
    "topk_group": 1,
    "first_k_dense_replace": 0,
    "q_lora_rank": 16,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "qk_head_dim": 16,
    "moe_layer_freq": 1,
    "decoder_sparse_step": 1,
    "enable_moe_block": True,
    "sliding_window": 16,
    "vocab_size_per_layer_input": 128,
    "hidden_size_per_layer_input": 8,
}


def _subconfig(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part, None)
        if config is None:
            return None
    return config


def moe_path(config: Any) -> str | None:
    """The nesting path of the sub-config that declares routed experts (even as None), or None."""
    for path in ("",) + NESTING_PATHS:
        sub = config if path == "" else _subconfig(config, path)
        if sub is None or isinstance(sub, dict | str | int):
            continue
        try:
            names = set(sub.to_dict())
        except Exception:
            continue
        if names & set(NUM_EXPERTS_SPELLINGS):
            return path
    return None


# When a family's validators reject the full shrink, only the MoE fields are shrunk.
MOE_FIELDS = frozenset(NUM_EXPERTS_SPELLINGS + TOP_K_SPELLINGS + EXPERT_WIDTH_SPELLINGS + SHARED_WIDTH_SPELLINGS
                       + ("n_group", "num_expert_group", "topk_group"))


def _shrunk_dict(sub: Any, overrides: dict[str, Any], fields: frozenset[str] | None) -> dict[str, Any]:
    data = sub.to_dict()
    for name, value in TINY_FIELDS.items():
        if name in data and (fields is None or name in fields):
            data[name] = value
    data.update(overrides)
    vocab = data.get("vocab_size")
    if isinstance(vocab, int):
        # Special token ids of the full vocabulary would index past the shrunk embedding.
        for key, value in list(data.items()):
            if key.endswith("_token_id") and isinstance(value, int) and value >= vocab:
                data[key] = vocab - 1
    layers = data.get("num_hidden_layers", 2)
    # Per-layer lists and tables must match the shrunk layer count.
    for key, value in list(data.items()):
        if isinstance(value, list) and key.endswith(("layer_types", "_per_layer")) and value:
            data[key] = [value[i % len(value)] for i in range(layers)]
    if isinstance(data.get("per_layer_config"), dict):
        data["per_layer_config"] = {k: v for k, v in data["per_layer_config"].items() if int(k) < layers}
    return data


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """A transformers config of `model_type` with every size field shrunk; `overrides` set MoE fields."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = cls()
        path = moe_path(default)
        if path is None:
            raise ValueError(f"{model_type} declares no routed experts")
        attempts: tuple[frozenset[str] | None, ...] = (None, MOE_FIELDS, frozenset())
        for fields in attempts[:-1]:
            try:
                return _build(cls, default, path, overrides, fields)
            except Exception:
                continue
        return _build(cls, default, path, overrides, attempts[-1])


def _build(cls: Any, default: Any, path: str, overrides: dict[str, Any], fields: frozenset[str] | None) -> Any:
    if path == "":
        data = _shrunk_dict(default, overrides, fields)
        data.pop("model_type", None)
        return cls(**data)
    head, *rest = path.split(".")
    nested = _shrunk_dict(_subconfig(default, path), overrides, fields)
    for part in reversed(rest):
        nested = {**_subconfig(default, head).to_dict(), part: nested}
    return cls(**{head: nested})


@functools.cache
def discover_moe_families() -> tuple[str, ...]:
    """Every model_type of the installed transformers whose config declares routed experts."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    found = []
    for model_type in sorted(CONFIG_MAPPING.keys()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = CONFIG_MAPPING[model_type]()
        except Exception:
            continue
        if moe_path(config) is not None:
            found.append(model_type)
    return tuple(found)


@dataclass(frozen=True)
class Family:
    """One MoE family as the checks see it."""

    name: str
    schema: KeySchema = KeySchema()
    tolerances: dict[torch.dtype, Tolerance] = field(default_factory=dict)

    @property
    def spec(self) -> MoESpec:
        return tiny_spec(self.name)


@functools.cache
def tiny_spec(model_type: str) -> MoESpec:
    """The resolved spec of the family's tiny config (built once per process)."""
    return resolve_moe_spec(tiny_config(model_type))


# The families the seed properties run over by default: one or more per routing variant and
# shared-expert combination, each with the checkpoint key schema its released checkpoints use.
DEFAULT_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gemma4", KeySchema(prefix="model.language_model.", block="", layout="per_expert")),
        Family("mixtral", KeySchema(prefix="model.", block="block_sparse_moe", names="w")),
        Family("qwen2_moe", KeySchema(prefix="model.", block="mlp")),
        Family("qwen3_moe", KeySchema(prefix="model.", block="mlp")),
        Family("olmoe", KeySchema(prefix="model.", block="mlp")),
        Family("gpt_oss", KeySchema(prefix="model.", block="mlp", layout="fused")),
        Family("deepseek_v3", KeySchema(prefix="model.", block="mlp")),
        Family("minimax_m2", KeySchema(prefix="model.", block="block_sparse_moe", names="w")),
        Family("llama4_text", KeySchema(prefix="language_model.model.", block="feed_forward", layout="fused")),
    )
}


def get_family(name: str) -> Family:
    """The default record for `name`, or a plain record for any other discovered family."""
    return DEFAULT_FAMILIES.get(name) or Family(name)
