"""Tiny configs: any discovered family's transformers config with every size field shrunk, in every nested
sub-config, keeping its MoE structure (routed experts, top-k, shared experts, groups, layer pattern).

Families are discovered from the installed transformers (`CONFIG_MAPPING`), never from a hand list.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from reference.config import (
    EXPERT_WIDTH_SPELLINGS,
    HIDDEN_SPELLINGS,
    NESTING_PATHS,
    NUM_EXPERTS_SPELLINGS,
    NUM_LAYERS_SPELLINGS,
    SHARED_WIDTH_SPELLINGS,
    TOP_K_SPELLINGS,
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
    "num_key_value_heads": 2,
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
    # vision and audio towers
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_layers": 2,
    "decoder_attention_heads": 2,
    # mamba mixers (heads × head width must equal expand × hidden)
    "mamba_n_heads": 2,
    "mamba_d_head": 32,
    "mamba_d_state": 16,
    "mamba_chunk_size": 16,
}
# Fields a default config leaves None although its model reads them as numbers (dots1's shared-expert count).
TINY_WHEN_NONE: dict[str, Any] = {"n_shared_experts": 1}
# Every other width a config ties to a hidden size (an adapter's input, a tower's output) shrinks with it.
HIDDEN_WIDTH = 32


def sub_config(config: Any, path: str) -> Any:
    """The (sub-)config at dotted `path` of `config` ("" for the config itself), or None where it has none."""
    for part in path.split(".") if path else ():
        config = getattr(config, part, None)
        if config is None:
            return None
    return config


def moe_path(config: Any) -> str | None:
    """The nesting path of the sub-config that declares routed experts (even as None), or None."""
    for path in ("",) + NESTING_PATHS:
        sub = sub_config(config, path)
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

# A shrunk field is named by the path of its (sub-)config in the serialised tree and its own name.
FieldRef = tuple[str, str]


def _is_config_dict(value: Any) -> bool:
    """A nested sub-config as `to_dict()` serialises it (it carries its model_type)."""
    return isinstance(value, dict) and "model_type" in value


def _resize_per_layer(data: dict[str, Any], old_layers: Any, layers: Any) -> None:
    """Per-layer lists and tables follow the shrunk layer count (a range of layer ids stays a range)."""
    if not isinstance(layers, int):
        return
    for key, value in list(data.items()):
        if not isinstance(value, list) or not value:
            continue
        per_layer = key.endswith(("layer_types", "_per_layer")) or len(value) == old_layers != layers
        if not per_layer:
            continue
        data[key] = list(range(layers)) if value == list(range(len(value))) else \
            [value[i % len(value)] for i in range(layers)]
    if isinstance(data.get("per_layer_config"), dict):
        data["per_layer_config"] = {k: v for k, v in data["per_layer_config"].items() if int(k) < layers}


def _hidden_sizes(data: dict[str, Any]) -> set[int]:
    """The hidden sizes of a serialised config and of every sub-config nested in it."""
    found = {v for n in HIDDEN_SPELLINGS if isinstance(v := data.get(n), int) and not isinstance(v, bool)}
    for value in data.values():
        if _is_config_dict(value):
            found |= _hidden_sizes(value)
    return found


def _tied_width(name: str, value: Any, hidden: set[int]) -> bool:
    """A width field that names a hidden size, or holds one of the config tree's hidden sizes."""
    if not isinstance(value, int) or isinstance(value, bool) or name in TINY_FIELDS or value <= HIDDEN_WIDTH:
        return False
    return "hidden_size" in name or "hidden_dim" in name or (("dim" in name or "size" in name) and value in hidden)


def _shrink_node(data: dict[str, Any], where: str, moe: str, overrides: dict[str, Any],
                 fields: frozenset[str] | None, keep: frozenset[FieldRef], changed: list[FieldRef],
                 hidden: set[int] | None = None) -> dict[str, Any]:
    """A shrunk copy of one serialised (sub-)config and, recursively, of every sub-config nested in it."""
    hidden = _hidden_sizes(data) if hidden is None else hidden
    data = dict(data)
    old_layers = data.get("num_hidden_layers")
    wanted = {name: value for name, value in TINY_FIELDS.items() if name in data}
    wanted |= {name: value for name, value in TINY_WHEN_NONE.items() if name in data and data[name] is None}
    if fields is None:
        wanted |= {name: HIDDEN_WIDTH for name, value in data.items() if _tied_width(name, value, hidden)}
    for name, value in wanted.items():
        if (fields is None or name in fields) and (where, name) not in keep and data[name] != value:
            data[name] = value
            changed.append((where, name))
    if where == moe:
        data.update(overrides)
    vocab = data.get("vocab_size")
    if isinstance(vocab, int):
        # Special token ids of the full vocabulary would index past the shrunk embedding.
        for key, value in list(data.items()):
            if key.endswith("_token_id") and isinstance(value, int) and value >= vocab:
                data[key] = vocab - 1
    _resize_per_layer(data, old_layers, data.get("num_hidden_layers", 2))
    for key, value in list(data.items()):
        if _is_config_dict(value):
            data[key] = _shrink_node(value, f"{where}.{key}" if where else key, moe, overrides, fields, keep,
                                     changed, hidden)
    return data


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """A transformers config of `model_type` with every size field shrunk, in every nested sub-config.

    `overrides` set fields of the MoE sub-config. Where a family's validators reject a shrunk value
    (a top-k fixed to 1, a head count tied to another), that one field keeps its default.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = cls()
        path = moe_path(default)
        if path is None:
            raise ValueError(f"{model_type} declares no routed experts")
        tree = default.to_dict()
        tree.pop("model_type", None)
        changed: list[FieldRef] = []
        try:
            return _build(cls, tree, path, overrides, None, frozenset(), changed)
        except Exception:
            pass
        for ref in dict.fromkeys(changed):  # keep one field at its default, the first that satisfies the validators
            try:
                return _build(cls, tree, path, overrides, None, frozenset({ref}), [])
            except Exception:
                continue
        try:
            return _build(cls, tree, path, overrides, MOE_FIELDS, frozenset(), [])
        except Exception:
            return _build(cls, tree, path, overrides, frozenset(), frozenset(), [])


def _build(cls: Any, tree: dict[str, Any], path: str, overrides: dict[str, Any], fields: frozenset[str] | None,
           keep: frozenset[FieldRef], changed: list[FieldRef]) -> Any:
    return cls(**_shrink_node(tree, "", path, overrides, fields, keep, changed))


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
