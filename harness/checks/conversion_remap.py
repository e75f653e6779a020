"""conversion-remap: a family's load-time checkpoint key conversion keeps converted names, is idempotent and injective.

Keys come from three sources: the model's own state_dict names (and the same spelled as its base model
saves them), the legacy names `save_pretrained` writes, and the key grammar (NOTES §5) restricted to the
family's prefixes and blocks. Properties, for every key k of a drawn checkpoint and r the conversion:
- an already-converted name is a fixed point: r(k) == k for the model's own names, and a base-model
  spelling of an own name loads into that own name;
- idempotence: r(r(k)) == r(k);
- injectivity: distinct keys land on distinct names, unless one declared merge (a converter that merges
  experts or gate+up) collects them, each into its own slot.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.conversion_keys import ConversionExample, ConversionKeys, conversion_examples
from harness.targets.base import ConversionCap, ConversionRules
from harness.verdict import PropertyViolation


def check_rules(conversion: ConversionCap, family: Family, drawn: ConversionExample) -> None:
    """Fixed points, idempotence and injectivity of the family's conversion over each drawn checkpoint."""
    rules = _rules(conversion, family)
    for checkpoint in drawn.checkpoints:
        _check_checkpoint(rules, checkpoint)


def _rules(conversion: ConversionCap, family: Family) -> ConversionRules:
    return call_target(f"rules({family.name!r})", conversion.rules, family.name,  # type: ignore[no-any-return]
                       returns=ConversionRules)


def _check_checkpoint(rules: ConversionRules, checkpoint: ConversionKeys) -> None:
    def rename(key: str) -> str:
        return call_target(f"rename({key!r})", rules.rename, key)  # type: ignore[no-any-return]

    once = {key: rename(key) for key in checkpoint.keys}
    _assert_fixed_points(rules, checkpoint, once)
    for key, first in once.items():
        twice = rename(first)
        if twice != first:
            raise PropertyViolation("the conversion is not idempotent: r(r(k)) != r(k)", source=checkpoint.source,
                                    key=key, once=first, twice=twice, rules_once=rules.explain(key),
                                    rules_twice=rules.explain(first))
    _assert_injective(rules, checkpoint.source, once)


def _assert_fixed_points(rules: ConversionRules, checkpoint: ConversionKeys, once: dict[str, str]) -> None:
    """The model's own names stay; a base-model spelling of one loads into it."""
    source = checkpoint.source
    own = set(rules.own_names)
    for key in checkpoint.keys:
        if key in own and once[key] != key:
            raise PropertyViolation("an already-converted name (the model's own) is not a fixed point of the "
                                    "conversion", source=source, key=key, once=once[key], rules=rules.explain(key))
        if key not in own and key in rules.base_names and once[key] != rules.base_names[key]:
            raise PropertyViolation("an already-converted name, spelled as the base model saves it, does not load "
                                    "into the model's own name", source=source, key=key,
                                    expected=rules.base_names[key], once=once[key], rules=rules.explain(key))


def _assert_injective(rules: ConversionRules, source: str, once: dict[str, str]) -> None:
    """Keys that land on one name are joined by one declared merge, each into its own slot."""
    landed: dict[str, list[str]] = defaultdict(list)
    for key, first in once.items():
        landed[first].append(key)
    for name, keys in landed.items():
        if len(keys) < 2:
            continue
        merges = [call_target(f"merge({k!r})", rules.merge, k) for k in keys]
        one_merge = all(merges) and len({m[0] for m in merges}) == 1
        if not one_merge or len({m[1] for m in merges}) != len(keys):
            raise PropertyViolation("distinct keys load into one name and no declared merge joins them (each into "
                                    "its own slot)", source=source, keys=keys[:4], once=name, merges=merges[:4],
                                    rules=[rules.explain(k) for k in keys[:2]])


def describe(drawn: ConversionExample) -> dict[str, Any]:
    """The drawn checkpoints as a counterexample: per source its size, first keys and grammar schema."""
    out: dict[str, Any] = {}
    for checkpoint in drawn.checkpoints:
        out[checkpoint.source] = {"keys": len(checkpoint.keys), "first_keys": list(checkpoint.keys[:3])}
        if checkpoint.schema is not None:
            out[checkpoint.source]["schema"] = checkpoint.schema.id
    return out


CONVERSION_REMAP: Check[ConversionCap] = Check(
    name="conversion-remap",
    capability="conversion",
    summary="load-time key conversion: converted names are fixed points; r(r(k)) == r(k); injective but for "
            "declared merges",
    draws=lambda conversion, family: conversion_examples(_rules(conversion, family)),
    holds=check_rules,
    describe=describe,
    needs_spec=False,
)
