"""model-parity through mlx-lm: the checkpoint directory transformers wrote, loaded by `mlx_lm.utils.load_model`
(strict: `ModelArgs.from_dict`, `Model`, `sanitize`, `load_weights`), run over the token ids in the worker; then
what `save_model` writes of that model (as `mlx_lm.convert` publishes it) loaded again.

The config handed to the loader is the directory's config.json in one of two forms (`spellings.FORMS`): as
transformers 5.24 wrote it, or in the v4 layout of most published checkpoints (`spellings.v4_layout` for every field
of the model type's ModelArgs, on the top level and on a `text_config`). Either way with every name the family
accepts for the expert count and the top-k set: the config's spelling is config-spelling's to judge, so that a
defect there does not hide what this check judges.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.targets.base import ModelRun
from harness.targets.mlx_lm.client import MlxError, Worker
from harness.targets.mlx_lm.spellings import METAL_ONLY, V4, v4_layout
from harness.targets.transformers import spellings as transformers_spellings
from harness.verdict import CheckSkipped, not_applicable


def _array(encoded: str, tokens: int) -> torch.Tensor:
    """The worker's base64 float32 logits as a [tokens, vocab] tensor."""
    return torch.from_numpy(np.frombuffer(base64.b64decode(encoded), dtype=np.float32).reshape(tokens, -1).copy())


def _special_float(node: dict[str, Any]) -> Any:
    """A float transformers writes tagged (`{"__float__": "Infinity"}`: JSON has no infinity), as load_config reads it:
    handed on as written, the dict would replace the float load_model decoded (nemotron_h's time_step_limit)."""
    return float(node["__float__"]) if node.keys() == {"__float__"} else node


class ModelProbe:
    """`run` for one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def loader_config(self, directory: Path, form: str = V4) -> dict[str, Any]:
        """The config the loader is handed in `form` (see the module docstring)."""
        tree = json.loads((directory / "config.json").read_text(), object_hook=_special_float)
        family = tree["model_type"]
        tree = transformers_spellings.with_every_spelling(family, tree)
        if form != V4:
            return tree
        # Every field ModelArgs has, not only those it requires: one with a default (qwen2_moe's rope_theta of 1e6)
        # would otherwise keep that default where the checkpoint means another value.
        wanted = self.worker.request("fields", config=tree)["fields"]
        tree = v4_layout(tree, wanted)
        if isinstance(tree.get("text_config"), dict):
            tree["text_config"] = v4_layout(tree["text_config"], wanted)
        return tree

    def run(self, directory: Path, ids: tuple[int, ...], form: str) -> ModelRun:
        """mlx-lm's logits from the directory, its config.json in `form`, and from what it saved of the loaded model."""
        config = self.loader_config(directory, form)
        try:
            found = self.worker.request("load_run", directory=str(directory), config=config, tokens=list(ids))
        except MlxError as exc:
            if METAL_ONLY in str(exc):
                raise CheckSkipped(not_applicable(f"mlx-lm's {config['model_type']} model runs a Metal kernel, and "
                                                  f"mlx's Linux CPU build has no Metal back-end: {exc}")) from exc
            raise
        error = found.get("reload_error")
        return ModelRun(logits=_array(found["logits"], len(ids)),
                        reloaded=_array(found["reloaded"], len(ids)) if "reloaded" in found else None,
                        reload_error=f"{error['type']}: {error['message'][:600]} (at {error['where']})" if error else None)
