"""Config variants of the installed transformers: the MoE fields each family's config class declares, and
the family's tiny model built and run with any of them set.

Fields are read from the MoE (sub-)config class (`harness.targets.config_fields.declared_fields`), with
string choices from its `Literal` annotations and from the strings the family's modeling module compares the
field with; a per-layer MLP pattern may also take transformers' own `ALLOWED_MLP_LAYER_TYPES` where the family
uses only those. A variant is built by the config class's constructor (a refusal there is the class's clear
error), then the model (`spellings.build_model`), then run: a forward of a few tokens through the whole model,
or through each MoE block alone for a family whose unchanged tiny model fails outside its MoE blocks here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from typing import Any

import torch
from torch import nn

from harness.targets.base import ConfigField, ConfigRejected, ConfigVariantsCap, VariantFailed
from harness.targets.config_fields import compared_strings, declared_fields
from harness.targets.transformers.spellings import (
    base_config,
    build_model,
    full_forward_runs,
    hidden_size_of,
    moe_blocks,
    vocab_size,
    with_moe_fields,
)
from harness.targets.transformers.tiny_model import ModelBuildFailed, unbuildable
from harness.tiny_configs import moe_path, sub_config
from harness.verdict import TargetError

# Tokens one forward runs on.
TOKENS = 4


@functools.cache
def _modeling_source(config_module: str) -> str:
    """The source of the modeling module beside a config class's module ("" when there is none)."""
    try:
        module = importlib.import_module(config_module.replace(".configuration_", ".modeling_"))
        return inspect.getsource(module)
    except Exception:  # noqa: BLE001 - a config without a modeling module of its own: no compared strings
        return ""


def _list_choices(sub: Any) -> dict[str, tuple[str, ...]]:
    """Per-layer kinds a family's lists may take beyond the tiny config's own: the entries of the class's
    default (full-size) lists, and transformers' ALLOWED_MLP_LAYER_TYPES for `mlp_layer_types` where the family
    uses only those (or none)."""
    from transformers.configuration_utils import ALLOWED_MLP_LAYER_TYPES

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = type(sub)().to_dict()
    except Exception:  # noqa: BLE001 - a class whose defaults do not build alone: the tiny lists only
        full = {}
    found = {k: tuple(dict.fromkeys(v)) for k, v in full.items()
             if isinstance(v, list) and v and all(isinstance(x, str) for x in v)}
    own: list[str] = sub.to_dict().get("mlp_layer_types") or list(found.get("mlp_layer_types", ()))
    if set(own) <= set(ALLOWED_MLP_LAYER_TYPES):
        found["mlp_layer_types"] = (*found.get("mlp_layer_types", ()), *ALLOWED_MLP_LAYER_TYPES)
    return found


@functools.cache
def fields(family: str) -> tuple[ConfigField, ...]:
    """The MoE fields the family's MoE (sub-)config class declares, with their tiny-config values."""
    config = base_config(family)
    path = moe_path(config) or ""
    sub = sub_config(config, path)
    choices = dict(compared_strings(_modeling_source(type(sub).__module__)))
    for name, extra in _list_choices(sub).items():
        choices[name] = (*choices.get(name, ()), *extra)
    return declared_fields(type(sub), sub.to_dict(), choices=choices, path=path)


def _main_output(out: Any) -> torch.Tensor:
    """The model's main float output: its logits, else its last hidden state, else its first tensor."""
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    items = out.to_tuple() if hasattr(out, "to_tuple") else out if isinstance(out, tuple) else (out,)
    return next(t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point())


def _forward(model: nn.Module, config: Any, blocks_alone: bool) -> torch.Tensor:
    """A forward of TOKENS seeded tokens through the model (its main output), or through each MoE block alone
    (their outputs, flattened and joined; empty when the model has none)."""
    path = moe_path(config) or ""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if not blocks_alone:
            input_ids = torch.randint(0, vocab_size(config, path), (1, TOKENS), generator=gen)
            return _main_output(model(input_ids=input_ids, use_cache=False))
        outs = [_main_output(block(torch.randn(1, TOKENS, hidden_size_of(config, path), generator=gen)))
                for block in moe_blocks(model).values()]
    return torch.cat([o.flatten() for o in outs]) if outs else torch.zeros(0)


def build_and_run(family: str, overrides: tuple[tuple[str, Any], ...]) -> torch.Tensor:
    """The output of a forward through the family's tiny model with `overrides` set on its MoE (sub-)config;
    ConfigRejected when the config class refuses them, VariantFailed (with transformers' own exception) when
    the model build or forward raises. ModelTooLarge propagates: a size we drew, not the library's fault."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = with_moe_fields(family, dict(overrides))
        except Exception as exc:
            raise ConfigRejected(exc) from exc
        try:
            model = build_model(config)
        except ModelBuildFailed as exc:
            raise VariantFailed("model build", exc.cause) from exc
        try:
            return _forward(model, config, blocks_alone=not full_forward_runs(family))
        except Exception as exc:
            raise VariantFailed("forward", exc) from exc


@functools.cache
def skip_reason(family: str) -> str | None:
    """Why the family's config variants do not apply (no model class), or None; a family with no MoE field to
    vary is the check's to exclude.

    The unchanged tiny model must build, run and give finite output: where transformers fails there, the
    TargetError (ModelBuildFailed included) propagates and the case fails at setup, as every check's does."""
    reason = unbuildable(lambda: build_model(base_config(family)))
    if reason:
        return reason
    try:
        out = build_and_run(family, ())
    except (ConfigRejected, VariantFailed) as exc:
        raise TargetError(f"{family}'s unchanged tiny config: {exc}", exc) from exc
    if not torch.isfinite(out).all():
        raise TargetError(f"{family}'s unchanged tiny model returns non-finite values", ValueError(family))
    return None


# The capability the transformers target offers (`make_target` wires it in).
CONFIG_VARIANTS = ConfigVariantsCap(fields, build_and_run, skip=skip_reason)
