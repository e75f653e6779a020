"""Tiny configs: any discovered family's transformers config with every size field shrunk, in every nested
sub-config, keeping its MoE structure (routed experts, top-k, shared experts, groups, layer pattern).

Families are discovered from the installed transformers (`CONFIG_MAPPING`), never from a hand list.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, TypeGuard

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
    "is_moe": True,
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
# Per family, fields its tiny config needs beyond the shrunk sizes (set on its MoE sub-config): ernie 4.5-VL's rotary
# embedding falls back to mrope_section [22, 22, 20] (half of head_dim 128) when the config names none, so the tiny
# head_dim 16 gets the same split scaled to its half, 8.
_ERNIE_VL_ROPE = {"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default", "mrope_section": [3, 3, 2]}}
FAMILY_FIELDS: dict[str, dict[str, Any]] = {"ernie4_5_vl_moe": _ERNIE_VL_ROPE, "ernie4_5_vl_moe_text": _ERNIE_VL_ROPE}
# Fields a default config leaves None although its model reads them as numbers (dots1's shared-expert count).
TINY_WHEN_NONE: dict[str, Any] = {"n_shared_experts": 1}
# Every other width a config ties to a hidden size (an adapter's input, a tower's output) shrinks with it.
HIDDEN_WIDTH = 32
# Every other vocabulary size, head count and head width a config carries (an indexer's heads, a sliding-window
# attention's heads, a mel codebook) shrinks to these; TINY_FIELDS' own values win where both name a field.
TINY_VOCAB = TINY_FIELDS["vocab_size"]
TINY_HEADS = 2
TINY_HEAD_DIM = 16
# A per-layer list whose values say which MLP a layer has: the shrunk layers keep every kind it names.
_MOE_LAYER_WORDS = ("mlp", "moe", "expert", "sparse", "ffn")
# Lists of layer ids that say which MLP a layer has (flint's dense `mlp_only_layers`, llama4's `moe_layers`), and
# counts of leading dense layers the tiny fields do not already zero: both follow the layers the shrink keeps.
_LAYER_ID_LISTS = ("mlp_only_layers", "moe_layers")
_DENSE_PREFIX_COUNTS = ("num_dense_layers",)
_TOKEN_ID_SUFFIXES = ("_token_id", "_token_ids", "_token_index")


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


def _is_int(value: Any) -> TypeGuard[int]:
    """An int that is not a bool (config flags are bools, and bools are ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _layer_sources(data: dict[str, Any], old_layers: Any, layers: int) -> list[int]:
    """Which of the full config's layers the `layers` shrunk ones copy: the first ones, unless that would drop a
    kind of MLP layer (a first run of dense layers, a per-layer expert table starting late); then the first layer
    of each kind, in order, filled up with the earliest others."""
    if not _is_int(old_layers) or old_layers <= layers:
        return list(range(layers))
    kinds = [key for key, value in data.items() if isinstance(value, list) and len(value) == old_layers
             and any(word in key for word in _MOE_LAYER_WORDS) and key not in _LAYER_ID_LISTS]
    found = data.get("per_layer_config")
    table: dict[Any, Any] = found if isinstance(found, dict) else {}
    ids = [set(data[k]) for k in _LAYER_ID_LISTS if isinstance(data.get(k), list)]
    counts = [data[k] for k in _DENSE_PREFIX_COUNTS if _is_int(data.get(k))]
    signature = [(tuple(repr(data[k][i]) for k in kinds), repr(table.get(str(i), table.get(i))),
                  tuple(i in s for s in ids), tuple(i < n for n in counts)) for i in range(old_layers)]
    firsts = list({sig: i for i, sig in reversed(list(enumerate(signature)))}.values())
    if set(signature[:layers]) == set(signature):
        return list(range(layers))
    chosen = sorted(firsts)[:layers]
    chosen += [i for i in range(old_layers) if i not in chosen][:layers - len(chosen)]
    return sorted(chosen)


def _shrink_counts(value: Any) -> Any:
    """A per-layer override table's sizes, shrunk as the config's own (never grown)."""
    if not isinstance(value, dict):
        return value
    return {k: min(v, TINY_FIELDS[k]) if k in TINY_FIELDS and _is_int(v) and _is_int(TINY_FIELDS[k]) else v
            for k, v in value.items()}


def _follow_sources(data: dict[str, Any], sources: list[int]) -> None:
    """Layer-id lists keep the shrunk layers whose source layer they listed; a leading dense count counts the
    shrunk layers whose source layer it covered."""
    for key in _LAYER_ID_LISTS:
        if isinstance(data.get(key), list):
            data[key] = [new for new, old in enumerate(sources) if old in data[key]]
    for key in _DENSE_PREFIX_COUNTS:
        if _is_int(data.get(key)):
            data[key] = sum(old < data[key] for old in sources)


def _keep_dense_prefix(data: dict[str, Any]) -> None:
    """A config holding both `mlp_layer_types` and `first_k_dense_replace` (DeepSeek-V3.2) keeps the two in agreement
    once shrunk: the count follows the leading dense layers the list kept (transformers builds from the list, other
    engines from the count, and the full config's two agree)."""
    kinds = data.get("mlp_layer_types")
    if isinstance(kinds, list) and _is_int(data.get("first_k_dense_replace")):
        data["first_k_dense_replace"] = next((i for i, kind in enumerate(kinds) if kind != "dense"), len(kinds))


def _resize_per_layer(data: dict[str, Any], old_layers: Any, layers: Any) -> None:
    """Per-layer lists and tables follow the shrunk layer count (a range of layer ids stays a range), all copying
    the same full-config layers (see `_layer_sources`), so a layer keeps its MLP kind and its expert count."""
    if not isinstance(layers, int):
        return
    sources = _layer_sources(data, old_layers, layers)
    if _is_int(old_layers) and old_layers > layers:
        _follow_sources(data, sources)
    for key, value in list(data.items()):
        if not isinstance(value, list) or not value or key in _LAYER_ID_LISTS:
            continue
        per_layer = key.endswith(("layer_types", "_per_layer")) or len(value) == old_layers != layers
        if not per_layer:
            continue
        if value == list(range(len(value))):
            data[key] = list(range(layers))
        elif len(value) == old_layers and old_layers >= layers:
            data[key] = [value[i] for i in sources]
        else:
            data[key] = [value[i % len(value)] for i in range(layers)]
    table = data.get("per_layer_config")
    if isinstance(table, dict):
        data["per_layer_config"] = {str(new): _shrink_counts(table[k]) for new, old in enumerate(sources)
                                    for k in (str(old), old) if k in table}


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


def _generic_size(name: str, value: Any) -> int | None:
    """The tiny value of a vocabulary size, head count or head width TINY_FIELDS does not name, else None."""
    if not _is_int(value) or name in TINY_FIELDS:
        return None
    if "vocab_size" in name and not name.startswith("unpadded_") and "divisible" not in name \
            and "multiple" not in name:
        return TINY_VOCAB if value > TINY_VOCAB else None
    if name.endswith("heads") and not name.startswith("first_"):
        return TINY_HEADS if value > TINY_HEADS else None
    # rotary_dim: the width rope turns, within a head (minimax_m3_vl keeps 64 beside a head width shrunk to 16)
    if name.endswith(("head_dim", "_d_head")) or name == "rotary_dim":
        return TINY_HEAD_DIM if value > TINY_HEAD_DIM else None
    return None


def _head_pairs(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(head count, head width) field pairs of one config that share a prefix (`swa_num_attention_heads` and
    `swa_head_dim`, `mamba_n_heads` and `mamba_d_head`)."""
    pairs = []
    for width in data:
        for suffix in ("head_dim", "d_head"):
            if width.endswith(suffix):
                prefix = width[:-len(suffix)]
                pairs += [(prefix + heads, width) for heads in ("num_heads", "n_heads", "num_attention_heads")
                          if prefix + heads in data]
    return pairs


def _keep_head_products(full: dict[str, Any], data: dict[str, Any], changed_now: set[str]) -> None:
    """Where the full config's heads × head width is a whole multiple of its hidden size (a mamba mixer's
    `heads × head_dim = expand × hidden`), the shrunk head width keeps that multiple of the shrunk hidden size."""
    old_hidden, new_hidden = full.get("hidden_size"), data.get("hidden_size")
    if not (_is_int(old_hidden) and _is_int(new_hidden)) or old_hidden <= 0:
        return
    for heads, width in _head_pairs(data):
        if width not in changed_now or not all(_is_int(v) for v in (full[heads], full[width], data[heads])):
            continue
        product = full[heads] * full[width]
        if product % old_hidden == 0 and (product // old_hidden * new_hidden) % data[heads] == 0:
            data[width] = product // old_hidden * new_hidden // data[heads]


def _keep_mla_rope_width(full: dict[str, Any], data: dict[str, Any]) -> None:
    """An MLA config whose `head_dim` is its rotary width (`qk_rope_head_dim`, as DeepSeek-V3's is: its rotary
    embedding is sized by `head_dim`) keeps the two equal once shrunk."""
    if _is_int(full.get("head_dim")) and full.get("head_dim") == full.get("qk_rope_head_dim") \
            and _is_int(data.get("qk_rope_head_dim")):
        data["head_dim"] = data["qk_rope_head_dim"]


def _keep_head_groups(full: dict[str, Any], data: dict[str, Any]) -> None:
    """A group count that divided a head count (a mamba mixer's `n_groups`, an output projection's `o_groups`)
    still divides it once the heads are shrunk."""
    heads = [k for k, v in data.items() if k.endswith("heads") and _is_int(v) and v > 0 and _is_int(full.get(k))]
    for key, value in list(data.items()):
        if not key.endswith("groups") or "code" in key or not _is_int(value) or value <= 0:
            continue
        for name in heads:
            if full[name] % value == 0 and data[name] % data[key] != 0:
                data[key] = math.gcd(data[key], data[name])


def _keep_unpadded(full: dict[str, Any], data: dict[str, Any]) -> None:
    """`unpadded_<size>` stays at most `<size>` and keeps a (smaller) padding where the full config pads:
    a head sized by the unpadded vocabulary and padded to the full one on save needs both shrunk together."""
    for key, value in list(data.items()):
        padded = key.removeprefix("unpadded_")
        if key == padded or not _is_int(value) or not _is_int(data.get(padded)) or not _is_int(full.get(padded)):
            continue
        gap = max(full[padded] - full[key], 0)
        data[key] = data[padded] - min(gap, data[padded] // 8) if gap else data[padded]


def _token_ids_in_vocab(data: dict[str, Any]) -> None:
    """The config's own special token ids (those its `validate_token_ids` reads) lie inside its own vocabulary;
    distinct ids stay distinct, moved to the top of the vocabulary past the ids already inside it."""
    vocab = data.get("vocab_size")
    if not _is_int(vocab) or vocab <= 0:
        return
    keys = [k for k, v in data.items() if k.endswith(_TOKEN_ID_SUFFIXES)
            and (_is_int(v) or (isinstance(v, list) and v and all(_is_int(x) for x in v)))]
    ids = [x for k in keys for x in (data[k] if isinstance(data[k], list) else [data[k]])]
    outside = sorted({x for x in ids if x >= vocab})
    if not outside:
        return
    used = set(ids)
    free = sorted([i for i in range(vocab - 1, -1, -1) if i not in used][:len(outside)])
    if len(free) < len(outside):  # more special tokens than the vocabulary holds
        free = [vocab - 1] * len(outside)
    moved = dict(zip(outside, free, strict=True))
    for k in keys:
        data[k] = [moved.get(x, x) for x in data[k]] if isinstance(data[k], list) else moved.get(data[k], data[k])


def _rope_dims(data: dict[str, Any], rope: dict[str, Any]) -> dict[str, int]:
    """The rotary dims a config may rotate over, by the field they come from (MLA's `qk_rope_head_dim`, the
    head width, hidden / heads), scaled by any partial rotary factor."""
    factor = rope.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0))
    if not isinstance(factor, int | float):
        return {}
    hidden, heads = data.get("hidden_size"), data.get("num_attention_heads")
    dims = {name: data[name] for name in ("qk_rope_head_dim", "head_dim") if _is_int(data.get(name))}
    if _is_int(hidden) and _is_int(heads) and heads > 0:
        dims["hidden_size"] = hidden // heads
    return {name: int(dim * factor) for name, dim in dims.items()}


def _keep_mrope_sections(full: dict[str, Any], data: dict[str, Any]) -> None:
    """A multimodal rope's `mrope_section` splits half the rotary dim; it keeps doing so at the shrunk width."""
    ropes = data.get("rope_parameters")
    if not isinstance(ropes, dict):
        return
    for rope in [ropes, *(v for v in ropes.values() if isinstance(v, dict))]:
        sections = rope.get("mrope_section")
        if not (isinstance(sections, list) and sections and all(_is_int(x) and x > 0 for x in sections)):
            continue
        old_dims, new_dims = _rope_dims(full, rope), _rope_dims(data, rope)
        source = next((name for name, dim in old_dims.items() if dim // 2 == sum(sections)), None)
        if source is None or source not in new_dims or new_dims[source] == old_dims[source]:
            continue
        half = new_dims[source] // 2
        if half < len(sections):
            continue
        share = [max(1, x * half // sum(sections)) for x in sections]
        for i in range(half - sum(share)):  # hand the rest out from the first section on
            share[i % len(share)] += 1
        while sum(share) > half:
            share[share.index(max(share))] -= 1
        rope["mrope_section"] = share


def _carved_widths(full: dict[str, Any], data: dict[str, Any]) -> None:
    """A `*features` width carved out of the hidden size (vitpose's per-expert part) keeps its share of it."""
    old_hidden, new_hidden = full.get("hidden_size"), data.get("hidden_size")
    if not (_is_int(old_hidden) and _is_int(new_hidden)) or old_hidden <= new_hidden:
        return
    for key, value in list(data.items()):
        if "features" in key and _is_int(value) and value == full.get(key) and new_hidden < value < old_hidden:
            data[key] = max(1, value * new_hidden // old_hidden)


def _shrink_node(data: dict[str, Any], where: str, moe: str, overrides: dict[str, Any],
                 fields: frozenset[str] | None, keep: frozenset[FieldRef], changed: list[FieldRef],
                 hidden: set[int] | None = None) -> dict[str, Any]:
    """A shrunk copy of one serialised (sub-)config and, recursively, of every sub-config nested in it.

    Every size a shrunk field constrains shrinks with it: unpadded sizes stay within their padded ones, head
    widths keep their product with the head count, rope sections their sum, token ids stay in the vocabulary,
    per-layer lists and tables copy the same layers.
    """
    hidden = _hidden_sizes(data) if hidden is None else hidden
    full = data
    data = {k: (dict(v) if k == "rope_parameters" and isinstance(v, dict) else v) for k, v in data.items()}
    if isinstance(data.get("rope_parameters"), dict):
        data["rope_parameters"] = {k: dict(v) if isinstance(v, dict) else v
                                   for k, v in data["rope_parameters"].items()}
    old_layers = data.get("num_hidden_layers")
    wanted = {name: value for name, value in TINY_FIELDS.items() if name in data}
    wanted |= {name: value for name, value in TINY_WHEN_NONE.items() if name in data and data[name] is None}
    if fields is None:
        wanted |= {name: HIDDEN_WIDTH for name, value in data.items() if _tied_width(name, value, hidden)}
        wanted |= {name: tiny for name, value in data.items() if name not in wanted
                   and (tiny := _generic_size(name, value)) is not None}
    changed_now = set()
    for name, value in wanted.items():
        if (fields is None or name in fields) and (where, name) not in keep and data[name] != value:
            current = data[name]
            if isinstance(current, list) and current and all(_is_int(x) for x in current) and _is_int(value):
                value = [min(x, value) for x in current]  # a per-layer or per-modality list of sizes
                if value == current:
                    continue
            data[name] = value
            changed.append((where, name))
            changed_now.add(name)
    if where == moe:
        data.update(overrides)
    _keep_head_products(full, data, changed_now)
    _keep_head_groups(full, data)
    _keep_mla_rope_width(full, data)
    _keep_unpadded(full, data)
    _token_ids_in_vocab(data)
    _keep_mrope_sections(full, data)
    _carved_widths(full, data)
    _resize_per_layer(data, old_layers, data.get("num_hidden_layers", 2))
    _keep_dense_prefix(data)
    for key, value in list(data.items()):
        if _is_config_dict(value):
            data[key] = _shrink_node(value, f"{where}.{key}" if where else key, moe, overrides, fields, keep,
                                     changed, hidden)
    return data


def model_types() -> tuple[str, ...]:
    """Every model_type the installed transformers itself declares (not ones another library registered with it)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return tuple(sorted(CONFIG_MAPPING_NAMES))


def config_class(model_type: str) -> Any:
    """transformers' own config class of `model_type`; KeyError when it has none. An engine's import may register a
    class of its own under a model_type transformers has (SGLang's ZayaConfig spells top-k `moe_router_topk`):
    families are transformers' configs, whatever else a process has imported."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise KeyError(model_type)
    registered = CONFIG_MAPPING._extra_content  # what AutoConfig.register added, looked up before its own
    if model_type not in registered:
        return CONFIG_MAPPING[model_type]
    theirs = registered.pop(model_type)
    try:
        return CONFIG_MAPPING[model_type]
    finally:
        registered[model_type] = theirs


def tiny_config(model_type: str, **overrides: Any) -> Any:
    """A transformers config of `model_type` with every size field shrunk, in every nested sub-config.

    `overrides` set fields of the MoE sub-config (after the family's own FAMILY_FIELDS). Where a family's
    validators reject a shrunk value (a top-k fixed to 1, a head count tied to another), that one field keeps
    its default.
    """
    overrides = {**FAMILY_FIELDS.get(model_type, {}), **overrides}
    cls = config_class(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = cls()
        path = moe_path(default)
        if path is None:
            raise ValueError(f"{model_type} declares no routed experts")
        tree = default.to_dict()
        tree.pop("model_type", None)
        changed: list[FieldRef] = []
        for whole in (lambda: tree, lambda: _without_base_fields(default, tree)):
            try:
                return _build(cls, whole(), path, overrides, None, frozenset(), changed)
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


def _without_base_fields(config: Any, tree: dict[str, Any]) -> dict[str, Any]:
    """`tree` with each sub-config's fields of the PretrainedConfig base left out where they hold the sub-config
    class's own default: some classes refuse them when rebuilt from their own `to_dict()` (transformers 5.19's
    DbrxFFNConfig: "Found unknown kwargs={'_name_or_path': '', 'output_attentions': False}")."""
    from transformers import PretrainedConfig

    base = set(PretrainedConfig().to_dict()) - {"model_type"}
    lean = dict(tree)
    for key, value in tree.items():
        if not isinstance(value, dict):
            continue
        try:
            sub = getattr(config, key, None)
        except Exception:  # noqa: BLE001 - a computed attribute that refuses to be read (Gemma 4's per-layer head_dim)
            continue
        if not isinstance(sub, PretrainedConfig):
            continue
        try:
            defaults = type(sub)().to_dict()
        except Exception:  # noqa: BLE001 - a class with no defaults of its own: keep the sub-config as it is
            continue
        lean[key] = {k: v for k, v in _without_base_fields(sub, value).items()
                     if not (k in base and k in defaults and defaults[k] == v)}
    return lean


def _build(cls: Any, tree: dict[str, Any], path: str, overrides: dict[str, Any], fields: frozenset[str] | None,
           keep: frozenset[FieldRef], changed: list[FieldRef]) -> Any:
    return cls(**_shrink_node(tree, "", path, overrides, fields, keep, changed))


@functools.cache
def discover_moe_families() -> tuple[str, ...]:
    """Every model_type of the installed transformers whose config declares routed experts."""
    return _discovery()[0]


def undiscoverable_model_types() -> dict[str, str]:
    """The model_types whose default config raised when built (so whether they have experts is unknown),
    each with what it raised: discovery cannot see them, and says so rather than dropping them silently."""
    return dict(_discovery()[1])


@functools.cache
def _discovery() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    found, raised = [], []
    for model_type in model_types():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = config_class(model_type)()
        except Exception as exc:  # noqa: BLE001 - its own validators reject its defaults: reported, not run
            raised.append((model_type, f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"))
            continue
        if moe_path(config) is not None:
            found.append(model_type)
    return tuple(found), tuple(raised)
