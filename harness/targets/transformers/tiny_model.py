"""A family's tiny transformers model, built in exactly one place: its shrunk config (with the fields its MoE
block needs to exist), sized on the meta device before anything is allocated, cached once per process.

`unbuildable` is the one way a capability says that a family's tiny model cannot be built here.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.targets.transformers.families import record
from harness.tiny_configs import tiny_config

# A shrunk config that still asks for more parameters than this is not built: a sub-config that
# escaped shrinking (a full-size vision tower, say) would take the machine's memory.
MAX_TINY_PARAMS = 50_000_000


class ModelTooLarge(Exception):
    """The family's shrunk config still describes a model too large to build here."""


class NoModelClass(Exception):
    """No Auto class and no model class of the config's family declares the config."""


@functools.cache
def base_config(family: str) -> Any:
    """The family's tiny config (the one every transformers capability builds from)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tiny_config(family, **record(family).build_fields)


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


def build_sized(config: Any) -> nn.Module:
    """The model of `config` (see `model_builder`) in eval mode, float32; sized on the `meta` device first,
    ModelTooLarge (and nothing allocated) when it asks for more than MAX_TINY_PARAMS."""
    builder = model_builder(config)
    with torch.device("meta"):
        count = sum(p.numel() for p in builder(config).parameters())
    if count > MAX_TINY_PARAMS:
        raise ModelTooLarge(f"{config.model_type}: the config asks for {count:,} parameters "
                            f"(limit {MAX_TINY_PARAMS:,}); a sub-config escaped shrinking")
    return builder(config).eval()


@functools.cache
def tiny_model(family: str) -> nn.Module:
    """The family's tiny model (causal LM, else its base model), built once per process by `build_sized`."""
    return build_sized(base_config(family))


def unbuildable(build: Callable[[], object], passes: tuple[type[Exception], ...] = ()) -> str | None:
    """None when `build()` succeeds, else why the family's tiny model cannot be built here (one line);
    exceptions of the `passes` types propagate to the caller, which says what they mean.

    Only our shrunk config or builder choice fails here; whatever the case itself runs is not guarded.
    """
    try:
        build()
    except passes:
        raise
    except Exception as exc:  # noqa: BLE001 - our shrunk config or builder choice, not a finding by itself
        first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
        return f"its tiny model cannot be built here ({type(exc).__name__}: {first_line})"
    return None
