"""Tiny configs: for every MoE family of the installed transformers, the shrunk config is consistent.

(a) the config's own validators (`validate()`, on it and every sub-config) pass; (b) every size a shrunk field
constrains shrank with it: unpadded vocabularies within their padded ones, every vocabulary tiny, the config's
special token ids inside its vocabulary, routed-expert counts (also per layer) tiny, per-layer lists one entry a
layer; (c) the tiny model builds on the meta device by the harness's own `model_builder`, and is small; (d) shrinking keeps
the MoE: wherever the full-size default config's model has a routed-experts module, the tiny model has one.

Families whose tiny model cannot be built are the findings recorded for every check (CANNOT_BUILD, a strict xfail:
when a release fixes one, its finding must go). Everything here runs on the meta device.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import transformers
from packaging.version import Version

from harness.findings import findings_for
from harness.targets.transformers.tiny_model import base_config, model_builder
from harness.tiny_configs import TINY_FIELDS, TINY_VOCAB, discover_moe_families
from reference.config import NUM_EXPERTS_SPELLINGS, ConfigError, moe_layer_indices
from reference.families import UNSUPPORTED_FAMILIES

FAMILIES = discover_moe_families()
# A tiny model this small is what every check builds many times; a sub-config that escaped shrinking is larger.
MAX_PARAMS = 20_000_000
TINY_EXPERTS = TINY_FIELDS["num_experts"]

# Families whose tiny model cannot be built, and why: the transformers findings recorded for every check ("*"),
# each a defect its own default config shows too (their reproducers build the default config).
CANNOT_BUILD: dict[str, str] = {f.family: f.reason for f in findings_for("transformers") if f.check == "*"}

# What fails only on the older supported releases (`tox -e tf-oldest`): family -> (the first release known not
# to fail, why). Their tests are strict xfails below that release. Configs that do not rebuild fail every test;
# models that do not build fail only the build test.
OLDER_CONFIGS: dict[str, tuple[str, str]] = {
    "dbrx": ("5.23.0", "5.17's DbrxAttentionConfig / DbrxFFNConfig reject the _name_or_path and output_attentions "
                       "keys their own to_dict writes, so no serialised config tree rebuilds"),
}
OLDER_MODELS: dict[str, tuple[str, str]] = {
    **OLDER_CONFIGS,
    "diffusion_gemma": ("5.23.0", "5.17's DiffusionGemmaConfig leaves a sub-config None that its model builds "
                                  "with AutoModel"),
}


def _families(older: dict[str, tuple[str, str]], cannot: dict[str, str] | None = None) -> list[Any]:
    """Every family; those that cannot pass here (below the release in `older`, or at all: `cannot`) as
    strict xfails, so an entry that starts passing must go."""
    out: list[Any] = []
    for family in FAMILIES:
        fixed_in, why = older.get(family, ("0", ""))
        reason = why if Version(transformers.__version__) < Version(fixed_in) else (cannot or {}).get(family)
        out.append(pytest.param(family, marks=pytest.mark.xfail(strict=True, reason=reason)) if reason else family)
    return out


def _configs(config: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """The config and every sub-config nested in it, with its dotted path."""
    yield path or "<root>", config
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            yield from _configs(sub, f"{path}.{name}" if path else name)


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [x for x in value if isinstance(x, int) and not isinstance(x, bool)]
    return []


def _fields(config: Any) -> dict[str, Any]:
    """The config's own fields (sub-configs excluded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: v for k, v in config.to_dict().items() if not (isinstance(v, dict) and "model_type" in v)}


def test_discovers_families() -> None:
    print(f"\n{len(FAMILIES)} MoE families; {len([f for f in CANNOT_BUILD if f in FAMILIES])} listed unbuildable")
    assert len(FAMILIES) > 60


def test_families_are_transformers_own_config_classes_whatever_else_registered() -> None:
    """An engine's import may register its own config class under a model_type transformers has (SGLang does for
    zaya, dbrx, nemotron_h): the family's config, its tiny config and discovery keep transformers' class."""
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from harness.tiny_configs import config_class, model_types, tiny_config

    class EngineMixtralConfig(PretrainedConfig):
        model_type = "mixtral"

    own = config_class("mixtral")
    AutoConfig.register("mixtral", EngineMixtralConfig, exist_ok=True)
    try:
        assert CONFIG_MAPPING["mixtral"] is EngineMixtralConfig  # what the engine's import did to transformers
        assert config_class("mixtral") is own and type(tiny_config("mixtral")) is own
        assert CONFIG_MAPPING["mixtral"] is EngineMixtralConfig  # and left as the engine made it
    finally:
        CONFIG_MAPPING._extra_content.pop("mixtral")
    class EngineOnlyConfig(PretrainedConfig):
        model_type = "engine_only_moe"

    AutoConfig.register("engine_only_moe", EngineOnlyConfig, exist_ok=True)
    try:
        assert "engine_only_moe" not in model_types()
        with pytest.raises(KeyError):
            config_class("engine_only_moe")
    finally:
        CONFIG_MAPPING._extra_content.pop("engine_only_moe")


@pytest.mark.parametrize("family", _families(OLDER_CONFIGS))
def test_tiny_config_validates(family: str) -> None:
    config = base_config(family)
    for where, sub in _configs(config):
        if hasattr(sub, "validate"):
            sub.validate()  # raises StrictDataclassClassValidationError, naming the validator
        layers = getattr(sub, "num_hidden_layers", None)
        for name in ("layer_types", "mlp_layer_types"):
            value = getattr(sub, name, None)
            if isinstance(value, list) and isinstance(layers, int):
                assert len(value) == layers, f"{family} {where}.{name} has {len(value)} entries for {layers} layers"


@pytest.mark.parametrize("family", _families(OLDER_CONFIGS))
def test_tiny_config_sizes_are_consistent(family: str) -> None:
    config = base_config(family)
    problems = []
    for where, sub in _configs(config):
        fields = _fields(sub)
        vocab = fields.get("vocab_size")
        for name, value in fields.items():
            if "vocab_size" in name and "divisible" not in name and "multiple" not in name:
                problems += [f"{where}.{name}={v} > {TINY_VOCAB}" for v in _ints(value) if v > TINY_VOCAB]
            if name.startswith("unpadded_") and isinstance(padded := fields.get(name.removeprefix("unpadded_")), int):
                problems += [f"{where}.{name}={v} > {name.removeprefix('unpadded_')}={padded}"
                             for v in _ints(value) if v > padded]
            if name.endswith(("_token_id", "_token_ids", "_token_index")) and isinstance(vocab, int):
                problems += [f"{where}.{name}={v} outside its vocabulary ({vocab})" for v in _ints(value)
                             if v >= vocab]
            if name in NUM_EXPERTS_SPELLINGS:
                problems += [f"{where}.{name}={v} > {TINY_EXPERTS}" for v in _ints(value) if v > TINY_EXPERTS]
        for layer, table in (fields.get("per_layer_config") or {}).items():
            for name in set(NUM_EXPERTS_SPELLINGS) & set(table or {}):
                problems += [f"{where}.per_layer_config[{layer}].{name}={v} > {TINY_EXPERTS}"
                             for v in _ints(table[name]) if v > TINY_EXPERTS]
    assert not problems, f"{family}: " + "; ".join(problems)


@pytest.mark.parametrize("family", _families(OLDER_MODELS, CANNOT_BUILD))
def test_tiny_model_builds_small_on_meta(family: str) -> None:
    config = base_config(family)
    build = model_builder(config)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = build(config)
    count = sum(p.numel() for p in model.parameters())
    assert count <= MAX_PARAMS, f"{family}: the tiny model has {count:,} parameters (limit {MAX_PARAMS:,})"


def _experts_modules(config: Any) -> list[str]:
    """The routed-experts modules (named `experts`) of the model `model_builder` builds for `config`, on meta."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = model_builder(config)(config)
    return [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] == "experts"]


def _default_has_experts(family: str) -> bool:
    """Whether the family's full-size default config has routed experts: MoE layers as the reference resolves
    them from it; where the reference cannot read it, experts modules in its model (built on meta); where that
    model does not build either, its declared routed-expert field (what discovered the family) says so."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = CONFIG_MAPPING[family]()
    try:
        return bool(moe_layer_indices(default))
    except ConfigError:
        pass
    try:
        return bool(_experts_modules(default))
    except Exception:  # noqa: BLE001 - the default model does not build: a finding of its own elsewhere
        return family not in UNSUPPORTED_FAMILIES


@pytest.mark.parametrize("family", _families(OLDER_MODELS, CANNOT_BUILD))
def test_shrinking_keeps_routed_experts(family: str) -> None:
    """Wherever the full-size default config has routed experts, the tiny model has a routed-experts module."""
    if _default_has_experts(family):
        assert _experts_modules(base_config(family)), (
            f"{family}: the full-size default config has routed experts, its tiny model none (shrinking dropped them)")
