"""model-parity: an engine that loads a checkpoint transformers wrote computes what transformers computes from it, and
loading what the engine saved of that model gives the same model again.

The checkpoint is the family's tiny transformers model with every weight seeded, saved by `save_pretrained`: the
per-expert (or fused) keys, prefixes and shared experts of the family's published checkpoints. The engine loads the
directory with its own loader, strictly (its key conversion, expert stacking and dropping included), and runs token
ids through the whole model. Properties:
- its logits equal transformers' within float32 rounding compounded over the layers: an expert stacked out of order,
  gate and up swapped, a bias or scale dropped or defaulted, a config value read under the wrong name all move the
  logits by their own size;
- the model it builds from what it saved of the loaded model (the form its converted checkpoints are published in,
  converted again at load) loads strictly and gives the same logits exactly: its conversion is idempotent.

transformers' own MoE blocks are held to the reference by block-parity on the transformers target; a family where
that fails is listed there, so a disagreement here is read against it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from harness.assertions import assert_close, assert_close_within, fail
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.model_checkpoints import ModelInput, logits_of, model_inputs, token_ids
from harness.targets.base import ModelLoaderCap, ModelRun
from harness.targets.transformers.written import from_transformers
from harness.tolerances import MODEL_LOGITS_BOUND, MODEL_LOGITS_TOLERANCE, Tolerance


def check_model_parity(cap: ModelLoaderCap, family: Family, example: ModelInput) -> None:
    with tempfile.TemporaryDirectory(prefix=f"moe-harness-{family.name}-") as tmp:
        directory = Path(tmp)
        want, ids = transformers_logits(family.name, example, directory, cap.writes_checkpoint)
        run = call_target("run(directory, token_ids, form)", cap.run, directory, ids, example.form, returns=ModelRun)
    bound = MODEL_LOGITS_BOUND * want.abs().max()
    assert_close_within(run.logits, want, bound, MODEL_LOGITS_TOLERANCE,
                        f"{family.name}: the engine's logits from the checkpoint transformers wrote ({example.form}) vs "
                        "transformers'",
                        f"{MODEL_LOGITS_BOUND:g} x the largest |logit| ({float(bound):.3g})")
    if run.reload_error is not None:
        fail(f"{family.name}: loading what the engine saved of the loaded model", "its own loader rejects it",
             run.reload_error, "the same model again")
    if run.reloaded is not None:
        assert_close(run.reloaded, run.logits, Tolerance(0.0, 0.0),
                     f"{family.name}: logits of the model loaded from what the engine saved vs of the model it saved")


def describe(example: ModelInput) -> dict[str, Any]:
    """The example, and the call that writes the same checkpoint again."""
    return {"tokens": example.tokens, "seed": example.seed, "form": example.form,
            "rebuild": f"harness.targets.transformers.saved_model.write_model_checkpoint(family, {example.seed}, "
                       "directory)"}


def transformers_logits(family: str, example: ModelInput, directory: Path,
                        writer: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The checkpoint of `example` written in `directory`, and transformers' logits over its token ids (with the ids);
    skips and failures as `from_transformers` says."""
    from harness.targets.transformers.saved_model import write_model_checkpoint

    def written() -> tuple[torch.Tensor, tuple[int, ...]]:
        model = write_model_checkpoint(family, example.seed, directory)
        ids = token_ids(example.seed, example.tokens, model.config.get_text_config().vocab_size)
        return logits_of(model, ids), ids

    return from_transformers(family, writer, written)


MODEL_PARITY: Check[ModelLoaderCap] = Check(
    name="model-parity",
    capability="model_loader",
    summary="a checkpoint transformers wrote, loaded by the engine's own loader, gives transformers' logits; what the "
            "engine saves of it loads again to the same model",
    draws=lambda cap, family: model_inputs(cap.forms),
    holds=check_model_parity,
    describe=describe,
    needs_spec=False,
)
