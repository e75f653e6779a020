"""Checkpoint keys for a family's load-time key conversion, from every source a real checkpoint has.

Sources: the model's own state_dict names, the same spelled as its base model saves them, the legacy
names `save_pretrained` writes, whole checkpoints mixing own and legacy names per layer, and the key
grammar (NOTES §5) restricted to the family's prefixes and blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from harness.targets.base import ConversionRules
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


def some_names(source: str, names: tuple[str, ...]) -> st.SearchStrategy[ConversionKeys]:
    """Up to 8 distinct names of `names`, or all of them, labelled `source`. Shrinks toward all of them (one
    choice, fewer than any list), else toward the fewest names."""
    return st.one_of(st.lists(st.sampled_from(names), max_size=8, unique=True).map(tuple),
                     st.just(names)).map(lambda keys: ConversionKeys(source, keys))


@st.composite
def mixed_checkpoints(draw: st.DrawFn, rules: ConversionRules) -> ConversionKeys:
    """A whole checkpoint spelling each of `rules.groups` (a layer, or the names outside layers) either
    converted or legacy. Shrinks toward all converted."""
    keys: list[str] = []
    for own, legacy in rules.groups:
        keys += legacy if draw(st.booleans()) else own
    return ConversionKeys("checkpoint", tuple(keys))


@st.composite
def grammar_keys(draw: st.DrawFn, schemas: tuple[KeySchema, ...]) -> ConversionKeys:
    """Expert keys of one of `schemas`: 1–2 layers, 1–4 experts, weight plus up to two quantization
    suffixes. Shrinks toward the first schema, one layer, one expert, `weight` only."""
    schema = draw(st.sampled_from(schemas))
    layers, experts = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    extra = draw(st.lists(st.sampled_from(SUFFIXES[1:]), unique=True, max_size=2))
    return ConversionKeys("grammar", tuple(schema.keys(layers, experts, ("weight", *extra))), schema)


def conversion_examples(rules: ConversionRules) -> st.SearchStrategy[ConversionExample]:
    """A checkpoint from each source `rules` has: the family's own names, their base-model spelling, its
    legacy names, a whole checkpoint mixing the two per layer, and the key grammar. Each shrinks as its part
    says: a source's whole name set, every group converted, one grammar layer and expert with `weight`."""
    parts = [some_names("own", rules.own_names)]
    if rules.base_names:
        parts.append(some_names("base", tuple(rules.base_names)))
    if rules.legacy_names:
        parts += [some_names("legacy", rules.legacy_names), mixed_checkpoints(rules)]
    if rules.schemas:
        parts.append(grammar_keys(rules.schemas))
    return st.tuples(*parts).map(ConversionExample)
