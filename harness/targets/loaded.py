"""What an engine's weight loading left in a model, as `LoadedParams`: taken from the model, and passed between a
loading process and the harness as files (safetensors for the tensors, JSON for the rest). Shared by the engines whose
loading runs in processes of their own (vLLM's ranks, SGLang's forks)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.targets.base import LoadedParams

# The experts' gate/up stack as the checkpoint spells its parts (per-expert w1/w3 or gate_proj/up_proj), gate first.
EXPERTS_GATE_UP = (("w1", "gate_proj"), ("w3", "up_proj"))
# The stacked parameters vLLM and SGLang both build, each with the checkpoint modules its rows hold in order (w13 and
# gate_up: gate then up; qkv: q, k, v). Each engine adds the name of its experts' stacked bias.
FUSED_PARTS = (
    ("w13_weight", EXPERTS_GATE_UP),
    ("gate_up_proj.weight", (("gate_proj", "w1"), ("up_proj", "w3"))),
    ("qkv_proj.weight", (("q_proj",), ("k_proj",), ("v_proj",))),
    ("qkv_proj.bias", (("q_proj",), ("k_proj",), ("v_proj",))),
)


def held_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copies of the model's parameters and floating-point buffers by name. A tensor that views the same elements as
    one already taken (a Mamba mixer's conv_weights, its conv1d.weight reshaped) is that one, and left out; views of
    other elements of one storage (experts packed into one flat tensor, each a slice of it) are each kept."""
    seen: set[tuple[int, int, int]] = set()

    def first_view(tensor: torch.Tensor) -> bool:
        elements = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()), tensor.numel())
        if elements in seen:
            return False
        seen.add(elements)
        return True

    params = {name: p.detach().clone() for name, p in model.named_parameters() if first_view(p)}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers() if b.is_floating_point() and first_view(b)}
    return params, buffers


def checkpoint_keys(directory: Path) -> list[str]:
    """Every tensor key of the directory's safetensors files, file by file in name order."""
    from safetensors import safe_open

    keys: list[str] = []
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, "pt") as f:
            keys += list(f.keys())  # noqa: SIM118 - safe_open is no mapping
    return keys


def mamba_a_from_a_log(params: dict[str, torch.Tensor], keys: list[str]) -> dict[str, str]:
    """Each Mamba mixer's `A` (name -> key), which engines' weight loaders compute as -exp of the checkpoint's `A_log`
    of that layer."""
    derived = {}
    for name in params:
        if name.endswith(".A"):
            tail = name[name.find("layers."):] + "_log"
            source = next((k for k in keys if k.endswith(tail)), None)
            if source is not None:
                derived[name] = source
    return derived


def write(loaded: LoadedParams, out: Path, rank: int) -> None:
    """Write rank `rank`'s LoadedParams under `out` (`read` gives it back)."""
    save_file({k: v.contiguous() for k, v in loaded.params.items()}, out / f"rank{rank}.safetensors")
    save_file({k: v.contiguous() for k, v in loaded.buffers.items()}, out / f"rank{rank}.buffers.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps({
        "experts": {k: list(v) for k, v in loaded.experts.items()}, "derived": loaded.derived,
        "reordered": loaded.reordered, "unused": loaded.unused, "expert_mapping": loaded.expert_mapping,
        "zeroed": loaded.zeroed}))


def read(out: Path, rank: int) -> LoadedParams:
    """Rank `rank`'s LoadedParams as `write` left it under `out`."""
    told = json.loads((out / f"rank{rank}.json").read_text())
    return LoadedParams(load_file(out / f"rank{rank}.safetensors"),
                        {k: tuple(v) for k, v in told["experts"].items()}, rank,
                        load_file(out / f"rank{rank}.buffers.safetensors"), told["derived"], told["reordered"],
                        told["unused"], tuple((p, w, int(e), s) for p, w, e, s in told["expert_mapping"]),
                        told["zeroed"])


def error_reply(exc: BaseException) -> dict[str, str]:
    """The engine's error as a loading process replies it: its type, message and the line that raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return {"error": f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"[:800]}
