"""Broken wrappers around the real transformers target, for tests that show a check catches a defect."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from harness.targets import load_target
from harness.targets.base import ConversionCap, Target, VariantFailed


def transformers_with(capability: str, **changes: Any) -> Target:
    """The installed transformers target, renamed and without known failures, with parts of one
    capability replaced (`changes`): everything else is the real thing."""
    real = load_target("transformers")
    cap = getattr(real, capability)
    assert cap is not None, f"transformers provides no {capability!r} capability"
    return dataclasses.replace(real, name="broken-transformers", known_failures=[],
                               **{capability: dataclasses.replace(cap, **changes)})


def conversion_with(family: str, **fields: Any) -> ConversionCap:
    """The family's real conversion (transformers' own rules) with some of its parts replaced."""
    from harness.targets.transformers.conversion import family_conversion

    broken = copy.copy(family_conversion(family))
    for name, value in fields.items():
        setattr(broken, name, value)
    rules = broken.rules()
    return ConversionCap(rules=lambda name: rules)


def assumes_every_layer_sparse(family: str, overrides: tuple[tuple[str, Any], ...]) -> torch.Tensor:
    """An engine that looks up every layer's experts: a config with a dense layer (a sparse step above 1, an
    mlp_only layer) fails at load with the KeyError such an engine raises; anything else is the real run."""
    real = load_target("transformers").config_variants
    assert real is not None
    settings = dict(overrides)
    if settings.get("decoder_sparse_step", 1) != 1 or settings.get("mlp_only_layers"):
        raise VariantFailed("model build", KeyError("model.layers.0.mlp.experts.gate_up_proj"))
    return real.build_and_run(family, overrides)
