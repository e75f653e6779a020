"""An inference engine's own MoE block, found in a model its loader built, under the reference block's interface
(functional-call, block-parity): x [T, H] -> [T, H], its router logits, its tensors under the reference's names.

Engine-neutral: the engine's target finds the block (the first module holding the engine's fused experts as
`experts`), says where its fused experts keep their tensors (`expert_names`) and whether their gate/up rows
interleave; the mapping onto the reference's names is read from the module tree here, strict both ways: a tensor
without a slot in the reference block, or a reference tensor the block lacks, is an `UnmappedBlock` naming them.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from reference.config import MoESpec
from reference.moe import MoEBlock

Built = TypeVar("Built")
ROUTER_NAMES = ("gate", "router")
# A router's tensors -> the reference gate's: its Linear's weight and bias (HunYuan's gate holds its Linear as `wg`).
ROUTER_TENSORS = {"weight": "weight", "bias": "bias", "wg.weight": "weight"}
SHARED_NAMES = ("shared_experts", "shared_expert", "shared_mlp")
# A shared MLP on the decoder layer, added beside the MoE block (granite), and its fused Linear names.
LAYER_SHARED_NAMES = ("shared_mlp",)
# A norm on the decoder layer applied to the MoE output, where the reference norms the block's output (AXK1's
# post_norm; vLLM applies it as the layer's post_mlp_layernorm).
LAYER_NORM_NAMES = ("post_mlp_layernorm",)
FUSED_SHARED_NAMES = {"input_linear": "gate_up_proj", "output_linear": "down_proj"}
SELECTION_NAMES = ("e_score_correction_bias", "per_expert_scale")
# A fused shared-expert Linear [2I, H], gate rows first: the reference's gate_proj and up_proj.
FUSED_SHARED = "shared_experts.gate_up_proj.weight"


class UnmappedBlock(Exception):
    """The engine's block holds tensors, or a structure, the reference block does not model."""


class MissingTensors(Exception):
    """The engine's block holds nothing for tensors the family's reference block (and its checkpoints) hold: the
    engine's error (it drops what the checkpoint gives it), reported by the check, not a limit of the harness."""


@dataclass(frozen=True)
class FoundBlock:
    """A family's MoE block in the model an engine built: the block, its decoder layer's shared MLP (or None), and
    the reference name of each of its tensors (their name -> ours; a fused shared gate_up becomes two)."""

    block: nn.Module
    layer_shared: nn.Module | None
    names: dict[str, str]
    interleaved: bool  # its experts' gate/up rows alternate gate, up (else gate rows first)
    layer_norm: nn.Module | None = None  # its decoder layer's norm of the MoE output, where the reference has one


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters and float buffers, each once, by its first name."""
    return dict(module.named_parameters()) | {n: b for n, b in module.named_buffers() if b.is_floating_point()}


def _aliases(module: nn.Module) -> dict[int, list[str]]:
    """Every name of each tensor of the module (a module registered twice, as an engine's experts runner re-holds
    the block's router, gives its tensors two names), by the tensor's id."""
    names: dict[int, list[str]] = {}
    held = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in held:
        names.setdefault(id(tensor), []).append(name)
    return names


class FoundMoE(nn.Module):
    """An engine's MoE block (plus its decoder layer's shared MLP) under the reference block's interface."""

    def __init__(self, found: FoundBlock, block: nn.Module, layer_shared: nn.Module | None,
                 layer_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.layer_shared = layer_shared
        self.layer_norm = layer_norm
        self.names = found.names
        self.interleaved = found.interleaved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        out = out if self.layer_shared is None else out + self.layer_shared(x)
        return out if self.layer_norm is None else self.layer_norm(out)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The block's router logits [T, E]: its router (an engine's Linear may return (output, bias))."""
        router = next(child for name, child in self.block.named_children() if name in ROUTER_NAMES)
        logits = router(x)
        return logits[0] if isinstance(logits, tuple) else logits

    def held(self) -> dict[str, torch.Tensor]:
        """The tensors `reference_state` exports, by this module's names (as they are; an engine whose weight
        processing repacks them for its kernel returns them as they were loaded)."""
        return tensors(self)

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The block's tensors under the reference MoEBlock's names (NOTES §3); a fused shared gate_up [2I, H] (gate
        rows first) split into the reference's gate_proj and up_proj; interleaved gate/up rows put gates first."""
        held = self.held()
        state = {ours: held[theirs].detach() for theirs, ours in self.names.items()}
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


def _slot(name: str, first: str, shared: str | None, expert_names: dict[str, str]) -> str | None:
    """The reference name of the block's tensor `name`, or None: router weight and bias, selection tensors, the fused
    experts' tensors (`expert_names`: their path under `experts.` -> ours, `{first}` the reference's first expert
    projection), the shared expert (child `shared`) and its gate."""
    head, _, rest = name.partition(".")
    leaf = name.rsplit(".", 1)[-1]
    if head in ROUTER_NAMES and rest in ROUTER_TENSORS:
        return f"gate.{ROUTER_TENSORS[rest]}"
    if leaf in SELECTION_NAMES:
        return leaf
    if head == "experts" and rest in expert_names:
        return "experts." + expert_names[rest].format(first=first)
    if head == "shared_expert_gate":
        return f"shared_expert_gate.{rest}"
    if head == shared:
        return f"shared_experts.{rest}"
    return None


def reference_names(spec: MoESpec, block: nn.Module, layer_shared: nn.Module | None,
                    expert_names: dict[str, str], layer_norm: nn.Module | None = None) -> dict[str, str]:
    """Each tensor of the wrapped block (`block.*`, `layer_shared.*`, `layer_norm.*`) -> its reference name, read from
    any of its names; raises UnmappedBlock where one has no slot or the reference needs one the block lacks."""
    first = "gate_up_proj" if spec.gated else "up_proj"
    shared = next((name for name, _ in block.named_children() if name in SHARED_NAMES), None)
    aliases = _aliases(block)
    slots = {f"block.{name}": next((s for alias in aliases[id(t)] if (s := _slot(alias, first, shared, expert_names))),
                                   None)
             for name, t in tensors(block).items()}
    unmapped = sorted(name for name, slot in slots.items() if slot is None)
    if unmapped:
        raise UnmappedBlock(f"{type(block).__name__} holds tensors with no slot in the reference block: "
                            f"{', '.join(unmapped)}")
    names = {name: slot for name, slot in slots.items() if slot is not None}
    for name in tensors(layer_shared) if layer_shared is not None else ():
        head, _, tail = name.partition(".")
        names[f"layer_shared.{name}"] = f"shared_experts.{FUSED_SHARED_NAMES.get(head, head)}.{tail}"
    for name in tensors(layer_norm) if layer_norm is not None else ():
        names[f"layer_norm.{name}"] = f"post_norm.{name}"
    ours = set(names.values())
    if FUSED_SHARED in ours:
        ours |= {"shared_experts.gate_proj.weight", "shared_experts.up_proj.weight"}
        ours.remove(FUSED_SHARED)
    reference = set(MoEBlock(spec).state_dict())
    if ours - reference:
        raise UnmappedBlock(f"{type(block).__name__} holds {', '.join(sorted(ours - reference))}, which the reference "
                            f"block for this family does not")
    if reference - ours:
        raise MissingTensors(f"{type(block).__name__} holds nothing for the reference's "
                            f"{', '.join(sorted(reference - ours))}")
    return names


def find_block(spec: MoESpec, model: nn.Module, holds_experts: Callable[[Any], bool],
               expert_names: dict[str, str]) -> FoundBlock:
    """The first module of `model` whose child `experts` satisfies `holds_experts`, mapped onto the reference's names
    (gate/up rows taken as gates first); raises UnmappedBlock where there is none, where its forward needs more than
    hidden states (what its decoder layer computes) or where its tensors do not map."""
    for _, layer in model.named_modules():
        for _, block in layer.named_children():
            if not holds_experts(getattr(block, "experts", None)):
                continue
            required = [p.name for p in list(inspect.signature(block.forward).parameters.values())[1:]
                        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if required:
                raise UnmappedBlock(f"{type(block).__name__}'s forward needs more than hidden states "
                                    f"({', '.join(required)}: its decoder layer computes them)")
            layer_shared = next((c for n, c in layer.named_children() if n in LAYER_SHARED_NAMES and c is not None),
                                None)
            layer_norm = next((c for n, c in layer.named_children() if n in LAYER_NORM_NAMES),
                              None) if spec.post_norm_eps is not None else None
            names = reference_names(spec, block, layer_shared, expert_names, layer_norm)
            return FoundBlock(block, layer_shared, names, interleaved=False, layer_norm=layer_norm)
    raise UnmappedBlock(f"{type(model).__name__} holds no MoE block the harness recognises (a module holding the "
                        "engine's fused experts as `experts`)")


def built_once(build: Callable[[str], Built]) -> Callable[[str], Built]:
    """`build(family)` run once per family in this process: its model, or the exception it raised raised again (a
    second try of a failed build is not the same build: SGLang's step3p7 went on to allocate tens of GB)."""
    results: dict[str, Built | Exception] = {}

    @functools.wraps(build)
    def once(family: str) -> Built:
        if family not in results:
            try:
                results[family] = build(family)
            except Exception as exc:  # noqa: BLE001 - kept, raised again on every call
                results[family] = exc
        result = results[family]
        if isinstance(result, Exception):
            raise result
        return result

    return once


def copies(found: FoundBlock) -> tuple[nn.Module, nn.Module | None, nn.Module | None]:
    """Fresh copies of the found block, its decoder layer's shared MLP and its norm (None where it has none)."""
    shared, norm = (None if m is None else copy_module(m) for m in (found.layer_shared, found.layer_norm))
    return copy_module(found.block), shared, norm


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose tensors are its own; what its modules hold that cannot be copied (a process group,
    its communicator) is shared with the original."""
    memo: dict[int, Any] = {}
    for param in module.parameters():
        # An engine's Parameter subclass may take other constructor arguments than the ones Parameter's deepcopy
        # passes (vLLM's): the same class around a copy of the data, its attributes (a weight loader) shared.
        copied = torch.Tensor._make_subclass(type(param), param.data.clone(), param.requires_grad)
        copied.__dict__.update(param.__dict__)
        memo[id(param)] = copied
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, (torch.Tensor, nn.Module, dict)) or id(value) in memo:
                continue
            try:
                copy.deepcopy(value)
            except Exception:  # noqa: BLE001 - not copyable (pickling refused, a C++ handle): shared
                memo[id(value)] = value
    return copy.deepcopy(module, memo)
