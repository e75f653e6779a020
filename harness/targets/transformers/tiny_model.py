"""A family's tiny transformers model, built in exactly one place: its shrunk config (with the fields its MoE
block needs to exist), sized on the meta device before anything is allocated, cached once per process.

A model that transformers' own code fails to build from a config its config class accepted is a finding:
`tiny_model` raises `ModelBuildFailed` (a TargetError), and the case that needed the model fails with it.
Only a config with no model class at all is a skip (`unbuildable` says so: not applicable).
"""

from __future__ import annotations

import functools
import importlib
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.tiny_configs import tiny_config
from harness.verdict import SkipReason, TargetError, not_applicable

# A shrunk config that still asks for more parameters than this is not built: a sub-config that
# escaped shrinking (a full-size vision tower, say) would take the machine's memory.
MAX_TINY_PARAMS = 50_000_000


class ModelTooLarge(Exception):
    """The family's shrunk config still describes a model too large to build here."""


class NoModelClass(Exception):
    """No Auto class and no model class of the config's family declares the config."""


class ModelBuildFailed(TargetError):
    """transformers raised while building a model from a config its own config class accepted."""


@functools.cache
def base_config(family: str) -> Any:
    """The family's tiny config (the one every transformers capability builds from)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tiny_config(family)


def model_builder(config: Any) -> Any:
    """How to build a model for `config`: its causal LM or base model by Auto class, else its own model class.

    A text sub-config with no Auto mapping (an omni model's thinker text, say) is built by the class in its
    family's modeling module that declares that config class: the causal LM if there is one, else the model.
    """
    from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

    for auto in (AutoModelForCausalLM, AutoModel):
        if type(config) in auto._model_mapping:
            return auto.from_config
    module = importlib.import_module(type(config).__module__.replace(".configuration_", ".modeling_"))
    classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, PreTrainedModel)
               and c.__dict__.get("config_class", getattr(c, "config_class", None)) is type(config)
               and not c.__name__.endswith("PreTrainedModel")]
    classes.sort(key=lambda c: (not c.__name__.endswith("ForCausalLM"), not c.__name__.endswith("Model"), c.__name__))
    if not classes:
        raise NoModelClass(f"no Auto class and no model class in {module.__name__} declares {type(config).__name__}")
    return classes[0]._from_config


def build_sized(config: Any, builder: Callable[[Any], nn.Module] | None = None) -> nn.Module:
    """The model `builder` (default: `model_builder`'s) builds from `config`, in eval mode, float32; sized on the
    `meta` device first, ModelTooLarge (and nothing allocated) when it asks for more than MAX_TINY_PARAMS;
    ModelBuildFailed when transformers' own model code raises on the config."""
    builder = builder or model_builder(config)
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in builder(config).parameters())
    except Exception as exc:
        raise ModelBuildFailed(f"building {config.model_type}'s model (from a config its {type(config).__name__} "
                               f"accepted) raised {one_line(exc)}; {_default_build(config.model_type)}",
                               exc) from exc
    if count > MAX_TINY_PARAMS:
        raise ModelTooLarge(f"{config.model_type}: the config asks for {count:,} parameters "
                            f"(limit {MAX_TINY_PARAMS:,}); a sub-config escaped shrinking")
    try:
        return builder(config).eval()
    except Exception as exc:
        raise ModelBuildFailed(f"building {config.model_type}'s model (from a config its {type(config).__name__} "
                               f"accepted) raised {one_line(exc)}", exc) from exc


_BUILD_FAILURES: dict[str, ModelBuildFailed] = {}


@functools.cache
def tiny_model(family: str) -> nn.Module:
    """The family's tiny model (causal LM, else its base model), built once per process by `build_sized`;
    a ModelBuildFailed is raised again on every later call without building again."""
    if family in _BUILD_FAILURES:
        raise _BUILD_FAILURES[family]
    try:
        return build_sized(base_config(family))
    except ModelBuildFailed as failure:
        _BUILD_FAILURES[family] = failure
        raise


def text_config(family: str) -> Any:
    """The config of the family's tiny model's text decoder (its own config for a text-only model)."""
    config: Any = tiny_model(family).config
    return config.get_text_config()


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message (at file:line of the innermost frame)`."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('site-packages/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {first}{where}"


def _default_build(family: str) -> str:
    """Whether the family's full-size default config builds (on the meta device, nothing allocated): says
    whether the defect needs our shrunk config at all."""
    from harness.tiny_configs import config_class

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = config_class(family)()
            with torch.device("meta"):
                model_builder(config)(config)
    except Exception as exc:  # noqa: BLE001 - only the evidence is wanted here
        return f"its full-size default config fails too ({one_line(exc)})"
    return "its full-size default config builds (the shrunk values trigger it)"


def unbuildable(build: Callable[[], object]) -> SkipReason | None:
    """None when `build()` succeeds; a not-applicable reason when the family's config has no model class.

    Anything else `build()` raises propagates: ModelBuildFailed is the target's failure, any other exception
    our own (a shrink we must fix), so neither becomes a skip.
    """
    try:
        build()
    except NoModelClass as exc:
        return not_applicable(f"transformers has no model for this config ({exc})")
    return None
