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
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.targets.base import ConversionRules, Target
from harness.verdict import PropertyViolation
from reference.checkpoint import SUFFIXES, KeySchema

SOURCES = ("own", "base", "legacy", "checkpoint", "grammar")


@dataclass(frozen=True)
class ConversionKeys:
    """One drawn checkpoint's keys and where they came from (one of SOURCES; `schema` for grammar keys)."""

    source: str
    keys: tuple[str, ...]
    schema: KeySchema | None = None


@dataclass(frozen=True)
class ConversionExample:
    """One checkpoint from each source the family has; each is checked on its own (they are not one checkpoint)."""

    checkpoints: tuple[ConversionKeys, ...]


def _some(source: str, names: tuple[str, ...]) -> st.SearchStrategy[ConversionKeys]:
    """A few of `names` (shrinks toward none) or all of them."""
    return st.one_of(st.lists(st.sampled_from(names), max_size=8, unique=True).map(tuple),
                     st.just(names)).map(lambda keys: ConversionKeys(source, keys))


@st.composite
def _checkpoint(draw: st.DrawFn, rules: ConversionRules) -> ConversionKeys:
    """A whole checkpoint spelling each layer (and the names outside layers) either converted or legacy;
    shrinks toward all converted."""
    keys: list[str] = []
    for own, legacy in rules.groups:
        keys += legacy if draw(st.booleans()) else own
    return ConversionKeys("checkpoint", tuple(keys))


@st.composite
def _grammar(draw: st.DrawFn, schemas: tuple[KeySchema, ...]) -> ConversionKeys:
    """Expert keys of one grammar schema with the family's prefix and block: 1–2 layers, 1–4 experts, weight
    plus optional quantization suffixes; shrinks toward one layer, one expert, `weight` only."""
    schema = draw(st.sampled_from(schemas))
    layers, experts = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    extra = draw(st.lists(st.sampled_from(SUFFIXES[1:]), unique=True, max_size=2))
    return ConversionKeys("grammar", tuple(schema.keys(layers, experts, ("weight", *extra))), schema)


def conversion_keys(rules: ConversionRules) -> st.SearchStrategy[ConversionExample]:
    """A checkpoint from each source: the family's own names, their base-model spelling, its legacy names, a
    whole checkpoint mixing the two per layer, and the key grammar; each shrinks toward few keys."""
    parts = [_some("own", rules.own_names)]
    if rules.base_names:
        parts.append(_some("base", tuple(rules.base_names)))
    if rules.legacy_names:
        parts += [_some("legacy", rules.legacy_names), _checkpoint(rules)]
    if rules.schemas:
        parts.append(_grammar(rules.schemas))
    return st.tuples(*parts).map(ConversionExample)


def check_conversion(target: Target, family: Family, drawn: ConversionExample) -> None:
    """Fixed points, idempotence and injectivity of the family's conversion over each drawn checkpoint."""
    assert target.conversion is not None
    rules = target.conversion.rules(family.name)
    for checkpoint in drawn.checkpoints:
        _check_checkpoint(rules, checkpoint)


def _check_checkpoint(rules: ConversionRules, checkpoint: ConversionKeys) -> None:
    def rename(key: str) -> str:
        return call_target(f"rename({key!r})", rules.rename, key)  # type: ignore[no-any-return]

    source = checkpoint.source
    once = {key: rename(key) for key in checkpoint.keys}
    own = set(rules.own_names)
    for key in checkpoint.keys:
        if key in own and once[key] != key:
            raise PropertyViolation("an already-converted name (the model's own) is not a fixed point of the "
                                    "conversion", source=source, key=key, once=once[key], rules=rules.explain(key))
        if key not in own and key in rules.base_names and once[key] != rules.base_names[key]:
            raise PropertyViolation("an already-converted name, spelled as the base model saves it, does not load "
                                    "into the model's own name", source=source, key=key,
                                    expected=rules.base_names[key], once=once[key], rules=rules.explain(key))
    for key, first in once.items():
        twice = rename(first)
        if twice != first:
            raise PropertyViolation("the conversion is not idempotent: r(r(k)) != r(k)", source=source, key=key,
                                    once=first, twice=twice, rules_once=rules.explain(key),
                                    rules_twice=rules.explain(first))
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


def _strategy(target: Target, family: Family) -> st.SearchStrategy[ConversionExample]:
    assert target.conversion is not None
    return conversion_keys(target.conversion.rules(family.name))


CONVERSION_REMAP = Check(
    name="conversion-remap",
    capability="conversion",
    summary="load-time key conversion: converted names are fixed points; r(r(k)) == r(k); injective but for "
            "declared merges",
    strategy=_strategy,
    prop=check_conversion,
    describe=describe,
)
