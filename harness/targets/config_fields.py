"""What a config class declares: its MoE fields, each as a ConfigField (kind, tiny default, choices).

`declared_fields` reads a config class (its dataclass fields and their annotations, its `attribute_map`) and
the stored values of one instance, and keeps the MoE fields: names holding a word of MOE_WORDS and none of
NOT_MOE_WORDS. A string field's choices are its `Literal[...]` arguments and the strings the family's modeling
source compares it with (`compared_strings`); a per-layer list's are its entries and those. Targets read their
config classes with it; `harness.strategies.config_variants` draws values for the fields.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

from harness.targets.base import ConfigField
from reference.config import NUM_LAYERS_SPELLINGS

# A field is MoE-relevant when its name holds one of these words ("rout" covers router, routed, routing)...
MOE_WORDS = ("expert", "moe", "rout", "topk", "top_k", "shared", "group", "norm_topk", "scaling", "aux",
             "capacity", "jitter", "sparse", "dense", "layer_types", "mlp_only", "first_k", "freq", "step",
             "interval")
# ... and none of these: attention, rotary, mamba, LM-head and token fields sharing a word with the MoE ones.
NOT_MOE_WORDS = ("rope", "mamba", "time_step", "index_topk", "o_groups", "n_groups", "kv_shared", "_token_id",
                 "vision", "audio", "swiglu", "conv", "rms_norm", "logits_scaling", "mtp_loss")


_COMPARED = re.compile(r"""([A-Za-z_][\w.]*)(?:\[[^\]\n]*\])?\s*(?:==|!=)\s*(['"])([^'"\n]+)\2""")
_COMPARED_LEFT = re.compile(r"""(['"])([^'"\n]+)\1\s*(?:==|!=)\s*([A-Za-z_][\w.]*)""")
_MEMBERSHIP = re.compile(r"""([A-Za-z_][\w.]*)(?:\[[^\]\n]*\])?\s+(?:not\s+)?in\s*[(\[{]([^)\]}\n]*)[)\]}]""")
_STRING = re.compile(r"""(['"])([^'"\n]+)\1""")


def is_moe_field(name: str) -> bool:
    """Whether a config field is MoE-relevant by its name (MOE_WORDS, minus NOT_MOE_WORDS)."""
    return any(w in name for w in MOE_WORDS) and not any(w in name for w in NOT_MOE_WORDS)


def compared_strings(source: str) -> dict[str, tuple[str, ...]]:
    """For each name in `source` (the last part of `config.x` / `self.x` / `x`, with any `[...]` index), the
    string literals it is compared with (`==`, `!=`, `in (...)`), in order of first appearance."""
    found: dict[str, dict[str, None]] = {}
    for m in _COMPARED.finditer(source):
        found.setdefault(m.group(1).rsplit(".", 1)[-1], {})[m.group(3)] = None
    for m in _COMPARED_LEFT.finditer(source):
        found.setdefault(m.group(3).rsplit(".", 1)[-1], {})[m.group(2)] = None
    for m in _MEMBERSHIP.finditer(source):
        for s in _STRING.finditer(m.group(2)):
            found.setdefault(m.group(1).rsplit(".", 1)[-1], {})[s.group(2)] = None
    return {name: tuple(values) for name, values in found.items()}


def _annotations(cls: type) -> dict[str, Any]:
    """The class's field annotations, resolved where they can be, else as the dataclass fields hold them."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation naming a module the config's module does not import
        pass
    return {f.name: f.type for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _type_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,) if annotation is not None else ()


_SAMPLES: dict[Any, Any] = {bool: False, int: 0, float: 0.0, str: ""}


def _sample(args: tuple[Any, ...]) -> Any:
    """A value of the first non-None type among `args` (an annotation's), or None."""
    for a in args:
        origin = typing.get_origin(a)
        if origin is Literal:
            return ""
        if origin is list:
            inner = typing.get_args(a)
            return [_SAMPLES.get(inner[0]) if inner else None]
        if a in _SAMPLES:
            return _SAMPLES[a]
    return None


def _kind_of(name: str, value: Any, args: tuple[Any, ...]) -> str | None:
    """The field's kind (FIELD_KINDS) from its tiny value, else from its annotation; None: not drawn."""
    sample = _sample(args) if value is None else value
    if isinstance(sample, bool):
        return "bool"
    if isinstance(sample, int | float | str):
        return {int: "int", float: "float", str: "str"}.get(type(sample))
    if not isinstance(sample, list):
        return None
    if sample and all(isinstance(x, str) for x in sample):
        return "layer_kinds" if "layer" in name else None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in sample):
        return "layer_ids" if "layers" in name else ("ints" if sample else None)
    return None


def declared_fields(cls: type, values: dict[str, Any], *, choices: dict[str, tuple[str, ...]] | None = None,
                    path: str = "") -> tuple[ConfigField, ...]:
    """The MoE fields of config class `cls` whose stored values (`values`, as `to_dict()` gives them) are the
    tiny config's: declared dataclass fields under their stored names (through `attribute_map`) and stored keys
    the class does not declare. A str field's choices are its value, its `Literal` arguments and `choices`
    (by name, see `compared_strings`; a per-layer list's also under its singular name); a per-layer list's
    are also its own entries."""
    choices = choices or {}
    aliases: dict[str, str] = dict(getattr(cls, "attribute_map", {}) or {})
    annotations = {aliases.get(n, n): a for n, a in _annotations(cls).items()}
    layers = next((v for n in NUM_LAYERS_SPELLINGS if isinstance(v := values.get(n), int)), 2)
    found = []
    for name in dict.fromkeys([*annotations, *values]):
        if name not in values or not is_moe_field(name) or isinstance(values[name], dict):
            continue
        value, args = values[name], _type_args(annotations.get(name))
        kind = _kind_of(name, value, args)
        if kind is None:
            continue
        literal = tuple(x for a in args if typing.get_origin(a) is Literal for x in typing.get_args(a))
        own = [value] if kind == "str" and isinstance(value, str) else list(value or ()) if kind == "layer_kinds" else []
        named = (*literal, *choices.get(name, ()), *choices.get(name[:-1], ()))
        options = tuple(dict.fromkeys([*own, *named])) if kind in ("str", "layer_kinds") else ()
        found.append(ConfigField(name, kind, value, options, optional=type(None) in args or value is None,
                                 layers=layers if kind in ("layer_kinds", "layer_ids") else 0, path=path))
    return tuple(found)
