"""The transformers side of the differential (`harness/checks/differential.py`), run in the checkpoint writer's
process (`writer.py`: an engine's import may change transformers' classes in its own): the family's checkpoint
written as load-parity writes it, what it means (the block of the model as written, under the reference's names), and
transformers' own block as `from_pretrained` loads it, run on the input the engine's side runs."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.verdict import CheckSkipped, harness_limit

# Beside the checkpoint directory, not in it: an engine's loader reads every safetensors file there as weights.
INPUT = "differential-input.safetensors"  # `x` [T, H], written by the engine's side before it asks
RESULT = "differential-transformers.safetensors"


def transformers_side(family: str, seed: int, directory: Path, x: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                                                     torch.Tensor | None, str | None]:
    """The family's checkpoint written in `directory` (from `seed`); returns what it means (the reference tensors of
    the written model's block), transformers' loaded block on x, and transformers' error (one line) where its loading
    or its block raises (no output then). Skips as `write_checkpoint` does. In the calling process: an engine whose
    import changes transformers' classes runs it in the writer's (`write_and_run`)."""
    from harness.targets.transformers.blocks import UnmappedBlock, block_in
    from harness.targets.transformers.saved_model import load, write_model_checkpoint
    from harness.targets.transformers.tiny_model import one_line
    from harness.targets.transformers.written import from_transformers

    written = from_transformers(family, False, lambda: write_model_checkpoint(family, seed, directory),
                                runs_forward=False)
    try:
        state = {name: t.detach().contiguous() for name, t in block_in(family, written).reference_state().items()}
    except UnmappedBlock as exc:
        raise CheckSkipped(harness_limit(f"transformers' block of {family} is not one the reference models: {exc}")) \
            from exc
    try:
        with torch.no_grad():
            return state, block_in(family, load(directory))(x).contiguous(), None
    except Exception as exc:  # noqa: BLE001 - transformers' own failure on its own checkpoint: the check reports it
        return state, None, one_line(exc)


def write_and_run(family: str, seed: int, directory: Path) -> str | None:
    """`transformers_side` on INPUT's `x`, its results saved in RESULT beside `directory` (`written.<name>`, and
    `output` where transformers gave one); returns transformers' error."""
    from safetensors.torch import load_file, save_file

    written, output, error = transformers_side(family, seed, directory, load_file(directory.parent / INPUT)["x"])
    result = {f"written.{name}": t for name, t in written.items()}
    if output is not None:
        result["output"] = output
    save_file(result, directory.parent / RESULT)
    return error

