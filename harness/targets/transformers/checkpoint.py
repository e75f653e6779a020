"""transformers' `from_pretrained` as a checkpoint loader (the `checkpoint_loader` capability).

`load_with_transformers` loads a checkpoint directory into the family's real model (no network, no
remote code, safetensors only) and returns its expert parameters under the reference names, with
transformers' own loading info as the report. `resave` checks the way back: `save_pretrained`, reload.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from harness.targets.base import CheckpointLoaderCap
from harness.targets.transformers.families import record
from reference.config import MoESpec
from reference.loader import LoadedCheckpoint, LoadReport, param_name

_EXPERT_PARAM = re.compile(r"layers\.(\d+)\.(?:\w+\.)?experts\.(gate_up_proj|down_proj)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Collect(logging.Handler):
    """Keeps warning records' messages, colour codes stripped."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(_ANSI.sub("", record.getMessage()))


@contextmanager
def _load_report() -> Iterator[_Collect]:
    """Collect transformers' warnings (its LOAD REPORT) instead of printing them, whatever the verbosity."""
    from transformers.utils import logging as hf_logging

    collect = _Collect()
    root = hf_logging.get_logger("transformers")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_default_handler()
    root.addHandler(collect)
    try:
        yield collect
    finally:
        root.removeHandler(collect)
        hf_logging.enable_default_handler()
        hf_logging.set_verbosity(verbosity)


def _from_pretrained(directory: Path) -> tuple[Any, dict]:
    """from_pretrained with no network, no remote code, safetensors only. Its errors about conversions
    and mismatches say "look at the above report": the report is appended to them here."""
    from transformers import AutoModelForCausalLM

    with _load_report() as report:
        try:
            return AutoModelForCausalLM.from_pretrained(  # type: ignore[return-value]
                directory, use_safetensors=True, local_files_only=True, trust_remote_code=False,
                output_loading_info=True)
        except Exception as exc:
            if not report.lines:
                raise
            raise RuntimeError(f"{exc}\nThe report it refers to:\n" + "\n".join(report.lines)) from exc


def expert_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's fused expert parameters under reference names (`model.layers.L.moe.experts.*`)."""
    out = {}
    for name, tensor in model.state_dict().items():
        m = _EXPERT_PARAM.search(name)
        if m:
            out[param_name(int(m.group(1)), m.group(2))] = tensor
    return out


def _report(info: dict) -> LoadReport:
    # Only expert slots are this capability's business: a generated checkpoint holds no attention weights.
    def experts(names: object) -> list[str]:
        return sorted(n for n in names if re.search(r"(^|\.)experts\.", n))  # type: ignore[attr-defined]

    # A mismatched parameter was not loaded: it counts as missing, under the model's name for it.
    mismatched = [m[0] if isinstance(m, tuple) else m for m in info.get("mismatched_keys", ())]
    return LoadReport(missing=experts([*info.get("missing_keys", ()), *mismatched]),
                      unexpected=experts(info.get("unexpected_keys", ())))


def load_with_transformers(checkpoint_dir: Path, spec: MoESpec) -> LoadedCheckpoint:
    """`AutoModelForCausalLM.from_pretrained(checkpoint_dir)`; its expert parameters and loading info.

    `spec` is not needed: the model is built from the directory's own config.json.
    """
    model, info = _from_pretrained(checkpoint_dir)
    return LoadedCheckpoint(expert_params(model), _report(info))


def resave(checkpoint_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict loaded from `checkpoint_dir`, state dict after `save_pretrained` and reloading it)."""
    first, _ = _from_pretrained(checkpoint_dir)
    with tempfile.TemporaryDirectory(prefix="moe-harness-resave-") as again:
        first.save_pretrained(again)
        second, _ = _from_pretrained(Path(again))
    return first.state_dict(), second.state_dict()


CHECKPOINT_LOADER = CheckpointLoaderCap(load_with_transformers, lambda family: record(family).checkpoint_schemas)
