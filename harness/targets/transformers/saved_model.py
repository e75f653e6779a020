"""model-parity through transformers itself: the checkpoint directory `save_pretrained` wrote, loaded by
`from_pretrained` (its key conversion on load; strict: a missing, unexpected or mismatched key raises), run over the
ids; then saved again by `save_pretrained` (the conversion reverted on save) and loaded again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.strategies.model_checkpoints import language_model_class, logits_of
from harness.targets.base import ModelLoaderCap, ModelRun
from harness.targets.transformers.tiny_model import one_line

SAVED = "saved-by-transformers"


class LoadNotStrict(RuntimeError):
    """from_pretrained left parameters unfilled, keys unused or shapes mismatched: what a strict loader rejects."""


def load(directory: Path) -> Any:
    """The model `from_pretrained` loads from `directory` (float32, eval), strictly."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    model, info = language_model_class(config).from_pretrained(directory, config=config, local_files_only=True,
                                                               output_loading_info=True, dtype="float32")
    wrong = {kind: sorted(info[kind])[:6] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
             if info.get(kind)}
    if wrong:
        raise LoadNotStrict(f"from_pretrained({directory.name}) loaded with {wrong}")
    return model.eval()


def run(directory: Path, ids: tuple[int, ...], form: str) -> ModelRun:
    """transformers' logits from the directory (its config.json as it wrote it: `form` is the one form), and from
    what it saves of the loaded model."""
    model = load(directory)
    logits = logits_of(model, ids)
    model.save_pretrained(directory / SAVED)
    try:
        again = logits_of(load(directory / SAVED), ids)
    except Exception as exc:  # noqa: BLE001 - the check judges it
        return ModelRun(logits, reload_error=one_line(exc))
    return ModelRun(logits, reloaded=again)


MODEL_LOADER = ModelLoaderCap(run, example_caps=(("dev", 1), ("ci", 1)))
