"""transformers' own checkpoint conversion rules for a family (the `conversion` capability).

The rules are the ones `from_pretrained` uses: `get_model_conversion_mapping(model)` on the family's tiny
model (renamings, converters, the legacy renamings). A key is renamed by transformers' `rename_source_key`
(every renaming in order, each free to chain on the last; then at most one converter; then the base-model
prefix added or stripped against the model's names). Its load loop adds one step no function exposes: a
key that already is one of the model's names is kept when the rules would move it to a name the model
lacks. `rename` does the same, so it is the key a checkpoint tensor is loaded into.

Names come from the model too: its state_dict (already converted), the same spelled as its base model
saves them, and the reverse conversion of its state dict (what `save_pretrained` writes by default).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import defaultdict
from typing import Any

from harness.targets.base import ConversionCap, ConversionRules
from harness.targets.transformers.tiny_model import tiny_model, unbuildable
from harness.verdict import not_applicable
from reference.checkpoint import BLOCKS, PREFIXES, PROJ_NAMES, KeySchema

# `<prefix>layers.<L>.<block>.experts.`: where a family keeps its experts, in any of its spellings.
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EXPERT_ROOT = re.compile(r"^(?P<prefix>(?:\w+\.)*?)layers\.\d+\.(?:(?P<block>\w+)\.)?experts\.")


class FamilyConversion:
    """One family's tiny model and the conversion transformers would apply when loading a checkpoint into it."""

    def __init__(self, family: str, model: Any) -> None:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, revert_weight_conversion

        self.family = family
        self.model_class = type(model).__name__
        state = model.state_dict()
        # rename_source_key asks the state dict `.get(name) is not None`; names are all it needs.
        self._names: dict[str, bool] = dict.fromkeys(state, True)
        self._prefix: str = model.base_model_prefix
        transforms = get_model_conversion_mapping(model)
        self._renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
        self._converters = [t for t in transforms if isinstance(t, WeightConverter)]
        # The converter a matched source pattern hands its tensor to, chosen the way the load loop chooses it.
        self._converter_of = {p: c for c in self._converters for p in c.source_patterns}
        self.own_names = tuple(state)
        dot = f"{self._prefix}." if self._prefix else ""
        self.base_names = {n[len(dot):]: n for n in state if dot and n.startswith(dot)}
        # Reverted a layer at a time, so each layer's legacy spelling is known (a rule may move a name across
        # layers, as inkling2's `attn_res.mlp_queries.<L>` -> `layers.<L>.mlp_input.query`).
        by_layer: dict[int, dict[str, Any]] = defaultdict(dict)
        for name, tensor in state.items():
            m = _LAYER.search(name)
            by_layer[int(m.group(1)) if m else -1][name] = tensor
        self.groups = tuple((tuple(part), tuple(revert_weight_conversion(model, part)))
                            for _, part in sorted(by_layer.items()))
        self.legacy_names = tuple(name for _, legacy in self.groups for name in legacy)

    def _rules(self, key: str) -> str:
        from transformers.core_model_loading import rename_source_key

        renamed, _ = rename_source_key(key, self._renamings, self._converters, self._prefix, self._names)
        return renamed

    def _kept(self, key: str, ruled: str) -> bool:
        """The load loop's own step: a name the model has stays when the rules move it to one it lacks."""
        return ruled not in self._names and key in self._names

    def rename(self, key: str) -> str:
        """The name transformers loads the checkpoint tensor `key` into."""
        from transformers.core_model_loading import rename_source_key

        ruled = self._rules(key)
        if self._kept(key, ruled):
            ruled, _ = rename_source_key(key, [], [], self._prefix, self._names)
        return ruled

    def merge(self, key: str) -> tuple[str, str] | None:
        """(the declared merge, the slot `key` fills in it) when a merging converter collects `key`, else None."""
        from transformers.core_model_loading import (
            Concatenate,
            MergeModulelist,
            apply_converters,
            apply_renamings,
        )

        if self._kept(key, self._rules(key)):
            return None
        renamed = apply_renamings(key, self._renamings)
        _, pattern = apply_converters(renamed, self._converters)
        if pattern is None:
            return None
        converter = self._converter_of[pattern]
        # A many-to-many op (ernie4_5_vl_moe's fuse-and-split of the text and vision experts) stacks its lists too.
        merges = len(converter.source_patterns) > 1 or any(
            isinstance(op, (MergeModulelist, Concatenate)) or getattr(op, "supports_many_to_many", False)
            for op in converter.operations)
        if not merges:
            return None
        matched = converter._scoped_match(renamed)
        span = matched[2].group(0) if matched else renamed
        return repr(converter), f"{pattern} <- {span!r}"

    def explain(self, key: str) -> list[str]:
        """Every rule that changes `key` on its way through `rename`, in the order they fire."""
        from transformers.core_model_loading import rename_source_key

        steps, current = [], key
        for renaming in self._renamings:
            after, _ = renaming.rename_source_key(current)
            if after != current:
                steps.append(f"{renaming!r}: {current!r} -> {after!r}")
                current = after
        for converter in self._converters:
            after, pattern = converter.rename_source_key(current)
            if pattern is not None:
                steps.append(f"{converter!r} (pattern {pattern!r}): {current!r} -> {after!r}")
                current = after
                break
        after, _ = rename_source_key(current, [], [], self._prefix, self._names)
        if after != current:
            steps.append(f"base_model_prefix {self._prefix!r} added or stripped: {current!r} -> {after!r}")
            current = after
        final = self.rename(key)
        if final != current:
            steps.append(f"kept as is: {key!r} is the model's own name and the rules gave {current!r}, "
                         "which it lacks (the load loop's fallback)")
        return steps or ["no rule fires"]

    def schemas(self) -> tuple[KeySchema, ...]:
        """The grammar's schemas (NOTES §5) with the prefixes and blocks this family spells its experts with."""
        prefixes, blocks = set(), set()
        for name in (*self.own_names, *self.legacy_names):
            m = _EXPERT_ROOT.match(name)
            if m:
                prefixes.add(m.group("prefix"))
                blocks.add(m.group("block") or "")
        dot = f"{self._prefix}." if self._prefix else ""
        prefixes |= {p[len(dot):] for p in prefixes if dot and p.startswith(dot)}
        return tuple(KeySchema(p, b, layout, names)
                     for p, b, layout, names in itertools.product(
                         [p for p in PREFIXES if p in prefixes], [b for b in BLOCKS if b in blocks],
                         ("per_expert", "fused"), tuple(PROJ_NAMES)))

    def rules(self) -> ConversionRules:
        """This family's conversion as the `conversion` capability hands it to the checks."""
        return ConversionRules(rename=self.rename, own_names=self.own_names, base_names=self.base_names,
                               legacy_names=self.legacy_names, groups=self.groups, schemas=self.schemas(), merge=self.merge,
                               explain=self.explain)


@functools.cache
def family_conversion(family: str) -> FamilyConversion:
    """The family's conversion, built once per process from its tiny model."""
    return FamilyConversion(family, tiny_model(family))


@functools.cache
def conversion_rules(family: str) -> ConversionRules:
    """The `conversion` capability's rules for `family`."""
    return family_conversion(family).rules()


# The functions of transformers.core_model_loading the rename, merge and legacy-name code calls.
LOADING_API = ("WeightConverter", "WeightRenaming", "revert_weight_conversion", "rename_source_key", "Concatenate",
               "MergeModulelist", "apply_converters", "apply_renamings")


def missing_loading_api() -> str | None:
    """Which of LOADING_API this transformers lacks, said in a line, or None when it has them all."""
    import transformers
    import transformers.core_model_loading as loading

    missing = [n for n in LOADING_API if not hasattr(loading, n)]
    if hasattr(loading, "WeightConverter") and not hasattr(loading.WeightConverter, "_scoped_match"):
        missing.append("WeightConverter._scoped_match")
    if not missing:
        return None
    return (f"transformers {transformers.__version__} has no core_model_loading.{', '.join(missing)} "
            "(the load-time rename functions this check calls)")


@functools.cache
def skip_reason(family: str) -> str | None:
    """Why the family has no conversion to check here (this transformers lacks the loading functions the
    check calls, or the family's tiny model cannot be built), or None."""
    missing = missing_loading_api()
    if missing:
        return not_applicable(missing)
    return unbuildable(lambda: tiny_model(family))


CONVERSION = ConversionCap(rules=conversion_rules, skip=skip_reason)
