"""Configs in every experts-per-token spelling and nesting: real families' and a synthetic new family's."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from hypothesis import reject
from hypothesis import strategies as st

from harness.pseudo_families import SYNTHETIC
from harness.tiny_configs import tiny_config
from reference.config import NESTING_PATHS, NUM_EXPERTS_SPELLINGS, TOP_K_SPELLINGS


@dataclass(frozen=True)
class ConfigExample:
    """A config and what any consumer must read from it."""

    config: Any
    top_k: int
    num_moe_layers: int
    description: dict[str, Any]
    num_layers: int  # every decoder layer, dense ones too


def _nest(inner: dict[str, Any], path: str, as_mapping: bool) -> Any:
    from transformers import PretrainedConfig

    node: Any = inner if as_mapping else PretrainedConfig(**inner)
    for part in reversed(path.split(".")) if path else ():
        node = {part: node} if as_mapping else PretrainedConfig(**{part: node})
    return node


def synthetic_config(top_k_name: str, experts_name: str, path: str = "", as_mapping: bool = False,
                     top_k: int = 1, experts: int = 1, layers: int = 1) -> ConfigExample:
    """A "new family" config spelling top-k and the expert count with the given names, nested under `path`
    ("" for the top level), as a PretrainedConfig or (`as_mapping`) a config.json mapping."""
    inner = {top_k_name: top_k, experts_name: experts, "num_hidden_layers": layers, "hidden_size": 16,
             "intermediate_size": 8, "num_attention_heads": 2, "model_type": "new_moe_family"}
    return ConfigExample(
        _nest(inner, path, as_mapping), top_k, layers,
        {"top_k_spelling": top_k_name, "experts_spelling": experts_name, "nesting": path or "<top level>",
         "form": "config.json mapping" if as_mapping else "PretrainedConfig", "top_k": top_k, "layers": layers},
        layers,
    )


@st.composite
def synthetic_configs(draw: st.DrawFn, spellings: tuple[str, ...] = TOP_K_SPELLINGS,
                      mappings: bool = False) -> ConfigExample:
    """A `synthetic_config` with one drawn top-k and expert-count spelling, at the top level or under any
    nesting path (with `mappings`, also as a config.json mapping). Shrinks toward the first spelling, no
    nesting, a config object."""
    top_k_name = draw(st.sampled_from(spellings))
    experts_name = draw(st.sampled_from(NUM_EXPERTS_SPELLINGS))
    path = draw(st.sampled_from(("",) + NESTING_PATHS))
    as_mapping = draw(st.booleans()) if mappings else False
    top_k = draw(st.integers(1, 8))
    experts = draw(st.integers(top_k, 16))
    layers = draw(st.integers(1, 4))
    return synthetic_config(top_k_name, experts_name, path, as_mapping, top_k, experts, layers)


@st.composite
def family_configs(draw: st.DrawFn, family: str) -> ConfigExample:
    """`family_config` with a drawn top-k and layer count; values its config class rejects are not drawn."""
    top_k = draw(st.integers(1, 4))
    layers = draw(st.integers(1, 3))
    try:
        return family_config(family, top_k, layers)
    except ValuesRejected:
        reject()


class ValuesRejected(ValueError):
    """The family's own config class refuses the values (zaya: top-k 1 only)."""


def family_config(family: str, top_k: int, layers: int) -> ConfigExample:
    """The family's own tiny transformers config with `top_k` and `layers`, set through the spelling and nesting the
    family itself uses; ValuesRejected where its config class refuses them."""
    from reference.config import moe_layer_indices, num_decoder_layers, resolve_top_k

    names = _present_names(family)
    overrides = {name: top_k for name in names if name in TOP_K_SPELLINGS}
    overrides.update({name: layers for name in names if name == "num_hidden_layers"})
    try:
        config = tiny_config(family, **overrides)
    except Exception as exc:  # noqa: BLE001 - whatever its validators raise
        raise ValuesRejected(f"{family}: {exc}") from exc
    return ConfigExample(config, resolve_top_k(config), len(moe_layer_indices(config)),
                         {"family": family, "top_k": top_k, "layers": layers, "set": sorted(overrides)},
                         num_decoder_layers(config))


@functools.cache
def _present_names(family: str) -> frozenset[str]:
    """The field names of the family's MoE sub-config (its tiny config is built once per process)."""
    from harness.tiny_configs import moe_path, sub_config

    config = tiny_config(family)
    return frozenset(sub_config(config, moe_path(config) or "").to_dict())


def config_examples(family: str) -> st.SearchStrategy[ConfigExample]:
    """Synthetic configs for the `synthetic` family, else the family's own config (each shrinks as above)."""
    return synthetic_configs() if family == SYNTHETIC else family_configs(family)


def capture_requests(family: str) -> st.SearchStrategy[tuple[ConfigExample, int]]:
    """A `config_examples(family)` config and a max_tokens in 1..64 for a routed-experts capturer. Shrinks
    as the config does, and toward max_tokens 1."""
    return st.tuples(config_examples(family), st.integers(1, 64))
