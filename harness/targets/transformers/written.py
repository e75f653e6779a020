"""The checkpoint transformers writes for an engine to load (model-parity, load-parity), and what it means when
transformers cannot: its own defects are its target's to report, skips for every other engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from harness.verdict import CheckSkipped, TargetError, harness_limit, not_applicable

T = TypeVar("T")


# Families whose tiny model transformers builds but cannot run a whole forward (FORWARD_LIMITS) or cannot even save
# (SAVE_LIMITS) because of our shrink (listed limits, to fix in harness/tiny_configs.py; the full-size configs run).
FORWARD_LIMITS = {
    "glm4v_moe": "the shrunk rotary width no longer holds its mrope_section [8, 12, 12] (split_with_sizes raises)",
    "mimo_v2_flash": "the shrunk sliding-window attention ends with zero key heads (a shape error in eager attention)",
}
SAVE_LIMITS = {
    "qwen3_omni_moe": "the shrunk model holds no floating-point parameter (save_pretrained's dtype lookup raises "
                      "StopIteration)",
}


def from_transformers(family: str, writer: bool, make: Callable[[], T], runs_forward: bool = True) -> T:
    """`make()`, which builds, writes or (`runs_forward`) runs the family's tiny transformers model. Where transformers
    gives nothing to hold an engine to: no model with a language-model head for the config, or none it can build (its
    build failure is the transformers target's finding): not applicable; a family of SAVE_LIMITS (or FORWARD_LIMITS,
    where `make` runs a forward): that harness limit. Its own model raising otherwise is a defect of transformers: the
    transformers target's failure (`writer`), not applicable to any other engine."""
    from harness.targets.transformers.saved_model import NoLanguageModel
    from harness.targets.transformers.tiny_model import ModelBuildFailed, NoModelClass, one_line

    limit = SAVE_LIMITS.get(family) or (FORWARD_LIMITS.get(family) if runs_forward else None)
    if limit is not None:
        raise CheckSkipped(harness_limit(f"our shrunk {family} config does not "
                                         f"{'save' if family in SAVE_LIMITS else 'run a whole forward'} in "
                                         f"transformers: {limit}"))
    try:
        return make()
    except (NoLanguageModel, NoModelClass, ModelBuildFailed) as exc:
        raise CheckSkipped(not_applicable(f"transformers builds no language model from {family}'s config ({exc}): "
                                          "no checkpoint to hold an engine to")) from exc
    except Exception as exc:
        what = f"transformers' own {family} model raised on the checkpoint it wrote: {one_line(exc)}"
        if writer:
            raise TargetError(what, exc) from exc
        raise CheckSkipped(not_applicable(f"{what} (the transformers target's model-parity reports it): no "
                                          "checkpoint to hold an engine to")) from exc


def write_checkpoint(family: str, seed: int, directory: Path) -> None:
    """The family's checkpoint written in `directory` and its config.json read back by transformers; where transformers
    cannot (no language model, a build failure, a config it cannot read back: its own defects), the skip
    `from_transformers` says."""
    from transformers import AutoConfig

    from harness.targets.transformers.saved_model import write_model_checkpoint

    def written() -> None:
        write_model_checkpoint(family, seed, directory)
        AutoConfig.from_pretrained(directory, local_files_only=True)

    from_transformers(family, False, written, runs_forward=False)
