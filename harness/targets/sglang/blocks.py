"""SGLang's own MoE blocks, found in the models its loader builds on the CPU, as x [T, H] -> [T, H] modules
(functional-call, block-parity).

For each family its tiny config is written as a checkpoint's config directory, installed as the served model's server
arguments, and the model SGLang's registry picks is built by its loader (`runtime.build_model`) in this process, set
up as one CPU rank (`runtime.one_rank`). Its MoE block is the first module holding a `FusedMoE` as `experts`: the
class the model builds for its MoE layers, constructed with the arguments the model passes. The block's router is a
`TopK` op, its experts a `FusedMoE`, which on a CPU without AMX run SGLang's torch-native path. Nothing here
re-implements a family: `forward` runs SGLang's code; the mapping onto the reference's names is read from the module
tree (FusedMoE's fixed `w13_weight` [E, 2I, H] gate rows first / `w2_weight` [E, H, I] layout).

Where SGLang cannot build the model on this machine (an accelerator needed, no implementation) the block is not
applicable; where the model's build fails otherwise it is SGLang's error, reported by the check; where the block holds
what the reference does not model, or its forward needs more than hidden states, it is a harness limit, each with the
reason.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.families import tiny_spec
from harness.targets.found_blocks import (
    FoundBlock,
    FoundMoE,
    UnmappedBlock,
    built_once,
    copies,
    find_block,
)
from harness.targets.seeding import seed_parameters
from harness.targets.sglang.runtime import CPU_LIMITS, build_limit
from harness.verdict import CheckSkipped, harness_limit, not_applicable
from reference.config import MoESpec

# FusedMoE's tensors and the reference FusedExperts' names (gated: gate_up_proj; not gated: up_proj).
EXPERT_NAMES = {"w13_weight": "{first}", "w2_weight": "down_proj", "w13_weight_bias": "{first}_bias",
                "w2_weight_bias": "down_proj_bias"}


@built_once
def _model(family: str) -> nn.Module:
    """`family`'s tiny model as SGLang's loader builds it for the checkpoint transformers writes of it (its config.json:
    transformers' class saved by transformers' model), in this process (one CPU rank)."""
    from sglang.srt.runtime_context import SpawnRanks, publish

    from harness.targets.sglang.runtime import build_model, one_rank, server_args
    from harness.targets.transformers.writer import WRITER

    one_rank("qwen3_moe")
    directory = tempfile.mkdtemp(prefix="moe-harness-sglang-block-")
    WRITER.write(family, 0, Path(directory))  # transformers' own classes: SGLang's import registers others here
    args = server_args(directory)
    # The served model's arguments, as its scheduler publishes them (last publish wins: one process may rebuild).
    publish(args, role="scheduler", ranks=SpawnRanks(world_rank=0))
    return build_model(args)[0]


@functools.cache
def find(family: str) -> FoundBlock:
    """`family`'s first MoE block in the model SGLang builds, with its reference names."""
    return find_in(family, _model(family))


def find_in(family: str, model: nn.Module) -> FoundBlock:
    """The first MoE block of `model`, an SGLang model of `family`'s config, with its reference names and its experts'
    gate/up row order as SGLang's runner reads it: its torch-native experts compute GPT-OSS's clamped SwiGLU (a silu
    runner given an alpha) on interleaved gate/up rows, as GPT-OSS checkpoints hold them; every other activation on
    gates-first rows."""
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    found = find_block(tiny_spec(family), model, lambda experts: isinstance(experts, FusedMoE), EXPERT_NAMES)
    experts: Any = found.block.experts
    runner = experts.moe_runner_config
    return replace(found, interleaved=runner.activation == "silu" and runner.gemm1_alpha is not None)


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh copy of SGLang's block for the spec's family, its parameters seeded."""
    found = find(spec.family)
    block = FoundMoE(found, *copies(found)).to(dtype)
    seed_parameters(block, seed)
    return block.eval()


def skip_reason(family: str) -> str | None:
    """Why SGLang has no block here for `family` that the reference can judge, or None (a build or a forward SGLang
    fails on its own is reported by the check)."""
    try:
        found = find(family)
    except CheckSkipped as exc:  # no checkpoint of this config: transformers cannot write one
        return exc.reason
    except UnmappedBlock as exc:
        return harness_limit(f"SGLang's MoE block for {family} is not one the reference models: {exc}")
    except Exception as exc:  # noqa: BLE001 - a limit of this machine or of our checkpoint naming; else SGLang's error
        return build_limit(exc)
    try:
        with torch.no_grad():
            found.block(torch.zeros(2, tiny_spec(family).hidden_size))
    except Exception as exc:  # noqa: BLE001 - only a GPU kernel launched is a limit here; else the check reports it
        if CPU_LIMITS.search(str(exc)):
            return not_applicable(f"{type(found.block).__name__}'s forward launches a GPU kernel on this machine "
                                  f"({type(exc).__name__}: {str(exc)[:160]})")
    return None
