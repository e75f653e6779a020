"""config-spelling through mlx-lm: a family's config.json with an expert count and a top-k each set through one name
transformers accepts for it, built by mlx-lm the way `load_model` builds a model (`ModelArgs.from_dict`, then
`Model`). What the model uses is measured in the worker: the leading dim of each switch layer's tensors, and the width
of the expert indices each switch layer is handed in one forward. A name `from_dict` drops (it keeps only its
dataclass's fields) leaves a default or a missing argument: a finding.

Two forms of the config.json, in this order:
- `config.json (v4 layout)`: as transformers 4 wrote it, the layout of most published checkpoints: the family's tiny
  config as the installed transformers serialises it, plus the top-level fields transformers 5 folded away
  (`rope_parameters`' entries, `head_dim` as hidden size / heads) where mlx-lm's ModelArgs requires them. Never a
  spelling of the expert count or top-k: those are what is judged.
- `config.json`: exactly as the installed transformers writes it (`save_pretrained`).
"""

from __future__ import annotations

import functools
from typing import Any

from harness.targets.base import Spelling, ValuesRejected
from harness.targets.mlx_lm.client import MlxError, Worker
from harness.targets.transformers import spellings as transformers_spellings
from harness.verdict import CheckSkipped, not_applicable
from reference.config import NUM_EXPERTS_SPELLINGS, TOP_K_SPELLINGS

V4, AS_WRITTEN = "config.json (v4 layout)", "config.json"
FORMS = (V4, AS_WRITTEN)
PROBE_TOKENS = 12
# What mlx raises where a model needs a Metal kernel: not there on a Linux CPU (not applicable, not a finding).
METAL_ONLY = "No Metal back-end"

Settings = tuple[tuple[Spelling, int], ...]


class ConfigNotBuilt(RuntimeError):
    """mlx-lm does not build the family's config.json in this form before any spelling is set."""


def spellings(family: str) -> tuple[Spelling, ...]:
    """The names the family's transformers config accepts for the expert count and the top-k (a config.json may hold
    any of them)."""
    return transformers_spellings.spellings(family)


def skip_reason(family: str) -> str | None:
    """Why the family has no spelling to check: its config has no expert-count or top-k name, or transformers cannot
    build a model from that config itself (a transformers finding: no config.json to hold mlx-lm to). None: it runs."""
    from harness.targets.transformers.tiny_model import ModelBuildFailed, tiny_model

    reason = transformers_spellings.no_spelling_reason(family)
    if reason:
        return reason
    try:
        tiny_model(family)
    except ModelBuildFailed as exc:
        return not_applicable(f"transformers cannot build {family}'s model from this config itself ({exc}; the "
                              "transformers target reports it): no config.json to hold mlx-lm to")
    return None


def v4_layout(tree: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """`tree` with the top-level fields transformers 4 wrote and transformers 5 folds away, where `required` asks for
    them and the tree does not hold them: `rope_parameters`' entries (`rope_theta`, `partial_rotary_factor`, and the
    whole dict as `rope_scaling` when it is not the default rope), `head_dim` = hidden size / attention heads."""
    out = dict(tree)
    rope = tree.get("rope_parameters") or {}
    derived = {**rope, "rope_scaling": None if rope.get("rope_type", "default") == "default" else rope}
    if "hidden_size" in tree and tree.get("num_attention_heads"):
        derived["head_dim"] = tree["hidden_size"] // tree["num_attention_heads"]
    judged = set(NUM_EXPERTS_SPELLINGS) | set(TOP_K_SPELLINGS)
    out.update({name: derived[name] for name in required if name not in tree and name in derived and name not in judged})
    return out


def _observations(found: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    return {"num_experts": sorted(found["experts"].items()),
            "top_k": [(where, k) for where, ks in sorted(found["top_k"].items()) for k in ks]}


class SpellingProbe:
    """`used` for one worker: each family's unchanged config is built once per form, first."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def _config(self, family: str, form: str, settings: Settings) -> dict[str, Any]:
        tree = transformers_spellings.config_json(family, settings)
        if form == AS_WRITTEN:
            return tree
        required = self.worker.request("fields", config=tree)["required"]
        return v4_layout(tree, required)

    @functools.cache  # noqa: B019 - one probe per target, living as long as the process
    def _base(self, family: str, form: str) -> None:
        try:
            self.worker.request("build", config=self._config(family, form, ()), tokens=PROBE_TOKENS)
        except MlxError as exc:
            if METAL_ONLY in str(exc):
                raise CheckSkipped(not_applicable(f"mlx-lm's {family} model runs a Metal kernel, and mlx's Linux CPU "
                                                  f"build has no Metal back-end: {exc}")) from exc
            raise ConfigNotBuilt(f"mlx-lm does not build {family}'s {form} before any spelling is set: {exc}") from exc

    def used(self, family: str, form: str, settings: Settings) -> dict[str, list[tuple[str, int]]]:
        """What mlx-lm's model, built from the family's config.json in `form` with `settings` set, uses."""
        self._base(family, form)
        try:
            found = self.worker.request("build", config=self._config(family, form, settings), tokens=PROBE_TOKENS)
        except MlxError as exc:
            rejected = transformers_spellings.rejected_values(family, settings)
            if rejected:
                raise ValuesRejected(rejected) from exc
            raise
        return _observations(found)
