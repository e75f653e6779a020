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

import copy
import functools
import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.families import tiny_spec
from harness.targets.seeding import seed_parameters
from harness.targets.sglang.runtime import CPU_LIMITS, build_limit
from harness.verdict import CheckSkipped, harness_limit, not_applicable
from reference.config import MoESpec
from reference.moe import MoEBlock

ROUTER_NAMES = ("gate", "router")
SHARED_NAMES = ("shared_experts", "shared_expert")
# A shared MLP on the decoder layer, added beside the MoE block (granite), and its fused Linear names.
LAYER_SHARED_NAMES = ("shared_mlp",)
FUSED_SHARED_NAMES = {"input_linear": "gate_up_proj", "output_linear": "down_proj"}
# FusedMoE's tensors and the reference FusedExperts' names (gated: gate_up_proj; not gated: up_proj).
EXPERT_NAMES = {"w13_weight": "{first}", "w2_weight": "down_proj", "w13_weight_bias": "{first}_bias",
                "w2_weight_bias": "down_proj_bias"}
SELECTION_NAMES = ("e_score_correction_bias", "per_expert_scale")
# A fused shared-expert Linear [2I, H], gate rows first: the reference's gate_proj and up_proj.
FUSED_SHARED = "shared_experts.gate_up_proj.weight"


class UnmappedBlock(Exception):
    """The family's SGLang block holds tensors, or a structure, the reference block does not model."""


@dataclass(frozen=True)
class FoundBlock:
    """A family's MoE block in the model SGLang built: the block, its decoder layer's shared MLP (or None), and the
    reference name of each of its tensors (their name -> ours; a fused shared gate_up becomes two)."""

    block: nn.Module
    layer_shared: nn.Module | None
    names: dict[str, str]
    interleaved: bool  # its experts' w13 rows alternate gate, up (else gate rows first)


class SGLangMoE(nn.Module):
    """An SGLang MoE block under the reference's interface: forward, router logits, tensors under reference names."""

    def __init__(self, block: nn.Module, layer_shared: nn.Module | None, names: dict[str, str],
                 interleaved: bool = False) -> None:
        super().__init__()
        self.block = block
        self.layer_shared = layer_shared
        self.names = names
        self.interleaved = interleaved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out if self.layer_shared is None else out + self.layer_shared(x)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The block's router logits [T, E]: its router Linear (SGLang's return (output, bias))."""
        router = next(child for name, child in self.block.named_children() if name in ROUTER_NAMES)
        logits = router(x)
        return logits[0] if isinstance(logits, tuple) else logits

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The block's tensors under the reference MoEBlock's names (NOTES §3); a fused shared gate_up [2I, H] (gate
        rows first) split into the reference's gate_proj and up_proj."""
        tensors = _tensors(self)
        state = {ours: tensors[theirs].detach() for theirs, ours in self.names.items()}
        if FUSED_SHARED in state:
            state["shared_experts.gate_proj.weight"], state["shared_experts.up_proj.weight"] = \
                state.pop(FUSED_SHARED).chunk(2)
        for name in SELECTION_NAMES:
            if name in state:  # some hold it as [1, E]
                state[name] = state[name].reshape(-1)
        if self.interleaved:  # gate rows at even positions, up rows at odd: the reference's gates first
            for name, dim in (("experts.gate_up_proj", 1), ("experts.gate_up_proj_bias", -1)):
                if name in state:
                    t = state[name]
                    state[name] = torch.cat([t.index_select(dim, torch.arange(first, t.shape[dim], 2))
                                             for first in (0, 1)], dim)
        return state


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | {n: b for n, b in module.named_buffers() if b.is_floating_point()}


def _slot(name: str, first: str, shared: str | None) -> str | None:
    """The reference name of the block's tensor `name`, or None: router weight and bias, selection tensors, FusedMoE's
    tensors (`first`: the reference's first expert projection), the shared expert (child `shared`) and its gate."""
    head, _, rest = name.partition(".")
    leaf = name.rsplit(".", 1)[-1]
    if head in ROUTER_NAMES and rest in ("weight", "bias"):
        return f"gate.{rest}"
    if leaf in SELECTION_NAMES:
        return leaf
    if head == "experts" and rest in EXPERT_NAMES:
        return "experts." + EXPERT_NAMES[rest].format(first=first)
    if head == "shared_expert_gate":
        return f"shared_expert_gate.{rest}"
    if head == shared:
        return f"shared_experts.{rest}"
    return None


def _reference_names(spec: MoESpec, block: nn.Module, layer_shared: nn.Module | None) -> dict[str, str]:
    """Each tensor of the wrapped block (`block.*`, `layer_shared.*`) -> its reference name; raises UnmappedBlock
    where one has no slot or the reference needs one the block lacks."""
    first = "gate_up_proj" if spec.gated else "up_proj"
    shared = next((name for name, _ in block.named_children() if name in SHARED_NAMES), None)
    slots = {f"block.{name}": _slot(name, first, shared) for name in _tensors(block)}
    unmapped = sorted(name for name, slot in slots.items() if slot is None)
    if unmapped:
        raise UnmappedBlock(f"{type(block).__name__} holds tensors with no slot in the reference block: "
                            f"{', '.join(unmapped)}")
    names = {name: slot for name, slot in slots.items() if slot is not None}
    for name in _tensors(layer_shared) if layer_shared is not None else ():
        head, _, tail = name.partition(".")
        names[f"layer_shared.{name}"] = f"shared_experts.{FUSED_SHARED_NAMES.get(head, head)}.{tail}"
    ours = set(names.values())
    if FUSED_SHARED in ours:
        ours |= {"shared_experts.gate_proj.weight", "shared_experts.up_proj.weight"}
        ours.remove(FUSED_SHARED)
    reference = set(MoEBlock(spec).state_dict())
    if ours - reference:
        raise UnmappedBlock(f"{type(block).__name__} holds {', '.join(sorted(ours - reference))}, which the reference "
                            f"block for this family does not")
    if reference - ours:
        raise UnmappedBlock(f"{type(block).__name__} holds nothing for the reference's "
                            f"{', '.join(sorted(reference - ours))}")
    return names


def _model(family: str) -> nn.Module:
    """`family`'s tiny model as SGLang's loader builds it for the checkpoint transformers writes of it (its config.json:
    transformers' class saved by transformers' model), in this process (one CPU rank); built once, and a build that
    raised raises the same again (a second try of a failed build is not the same build: step3p7's went on to
    allocate tens of GB)."""
    built = _built(family)
    if isinstance(built, BaseException):
        raise built
    return built


@functools.cache
def _built(family: str) -> nn.Module | BaseException:
    try:
        return _build_model(family)
    except Exception as exc:  # noqa: BLE001 - kept, raised again by _model
        return exc


def _build_model(family: str) -> nn.Module:
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
    from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE

    model = _model(family)
    for _, layer in model.named_modules():
        for _, block in layer.named_children():
            if not isinstance(getattr(block, "experts", None), FusedMoE):
                continue
            required = [p.name for p in list(inspect.signature(block.forward).parameters.values())[1:]
                        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if required:
                raise UnmappedBlock(f"{type(block).__name__}'s forward needs more than hidden states "
                                    f"({', '.join(required)}: its decoder layer computes them)")
            layer_shared = next((c for n, c in layer.named_children() if n in LAYER_SHARED_NAMES and c is not None),
                                None)
            names = _reference_names(tiny_spec(family), block, layer_shared)
            # SGLang's torch-native experts compute GPT-OSS's clamped SwiGLU (a silu runner given an alpha) on
            # interleaved gate/up rows, as GPT-OSS checkpoints hold them; every other activation on gates-first rows.
            runner = block.experts.moe_runner_config
            return FoundBlock(block, layer_shared, names, runner.activation == "silu" and runner.gemm1_alpha is not None)
    raise UnmappedBlock(f"{type(model).__name__} holds no module with a FusedMoE as its `experts`")


def _copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose tensors are its own; what its modules hold that cannot be copied (a process group,
    its communicator) is shared with the original."""
    memo: dict[int, Any] = {}
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, (torch.Tensor, nn.Module, dict)) or id(value) in memo:
                continue
            try:
                copy.deepcopy(value)
            except Exception:  # noqa: BLE001 - not copyable (pickling refused, a C++ handle): shared
                memo[id(value)] = value
    return copy.deepcopy(module, memo)


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A fresh copy of SGLang's block for the spec's family, its parameters seeded."""
    found = find(spec.family)
    layer_shared = None if found.layer_shared is None else _copy(found.layer_shared)
    block = SGLangMoE(_copy(found.block), layer_shared, found.names, found.interleaved).to(dtype)
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
