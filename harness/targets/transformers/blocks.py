"""The real transformers MoE block of a family, lifted out of its tiny model and mapped onto the reference.

Where a block sits and how its weights are laid out is read from the module tree and from the flags
transformers' experts decorator sets (`is_transposed`, `is_concatenated`); the family's `layout` record holds the
families whose experts carry no flags. Nothing here re-implements a family: `forward` runs its own code.

Experts are fused gated (`gate_up_proj` [E, 2I, H]) or non-gated (`up_proj` [E, I, H], the reference's
`gated=False`); a norm module on the block is the reference's post-block norm when the family's record says the
block has one. Every skip reason `skip_reason` gives carries its kind (`harness.verdict`).
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import torch
from torch import nn

from harness.families import tiny_spec
from harness.targets.transformers.families import record
from harness.targets.transformers.tiny_model import tiny_model, unbuildable
from harness.verdict import SkipReason, harness_limit, not_applicable
from reference.config import MoESpec
from reference.families import describing, facts_named, undescribed

ROUTER_NAMES = ("gate", "router")
SHARED_NAMES = ("shared_experts", "shared_expert", "shared_mlp")
SHARED_GATE_NAMES = ("shared_expert_gate",)
# Reference names of the routing tensors and the name suffixes families give them.
SELECTION_TENSORS = {"e_score_correction_bias": ("e_score_correction_bias", "expert_bias"),
                     "per_expert_scale": ("per_expert_scale",)}
# A shared MLP that sits on the decoder layer beside the MoE block and is added to its output (granite).
LAYER_SHARED_NAMES = ("shared_mlp",)
# Fused shared-MLP Linear names, as the reference's (gate_up_proj [2I, H], gate rows first).
FUSED_SHARED_NAMES = {"input_linear": "gate_up_proj", "output_linear": "down_proj"}
# The first projection of an experts module: fused gate and up [E, 2I, H], or a non-gated up [E, I, H].
FIRST_PROJ_NAMES = ("gate_up_proj", "up_proj")

class UnmappedBlock(Exception):
    """The family's block holds tensors, or a structure, that the reference block does not model."""


class RealMoEBlock(nn.Module):
    """A family's own MoE modules (router, experts, shared MLP, shared gate) as one x [T, H] -> [T, H] block.

    The children are the family's modules, copied out of its model; parameter names are theirs.
    `layer_shared` is a shared MLP the decoder layer adds beside the block (granite's `shared_mlp`).
    """

    def __init__(self, family: str, spec: MoESpec, block: nn.Module, layer_shared: nn.Module | None = None) -> None:
        super().__init__()
        self.family = family
        self.layer_shared = layer_shared
        experts = block.get_submodule("experts")
        router = _child(block, ROUTER_NAMES)
        if router is None:
            raise UnmappedBlock(f"{family}: block {type(block).__name__} has no child named "
                                f"{' or '.join(ROUTER_NAMES)}")
        # gemma4, diffusion_gemma: router and experts sit on the decoder layer beside a dense `mlp` that runs
        # in parallel.
        self.on_layer = _experts_on_layer(block)
        shared = ("mlp", block.mlp) if self.on_layer else _child(block, SHARED_NAMES)
        shared_gate = _child(block, SHARED_GATE_NAMES)
        required = [p.name for p in list(inspect.signature(block.forward).parameters.values())[1:]
                    if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required and not self.on_layer:
            raise UnmappedBlock(f"{family}: its block's forward needs more than hidden states ({', '.join(required)})")
        self.moe: nn.Module
        self.shared_name: str | None
        if self.on_layer:
            self.moe = nn.ModuleDict({"router": router[1], "experts": experts, "mlp": block.get_submodule("mlp")})
            self.router_name, self.shared_name = "router", "mlp"
        else:
            self.moe = block
            self.router_name, self.shared_name = router[0], shared[0] if shared else None
        self.shared_gate_name = shared_gate[0] if shared_gate else None
        self.router_weight = _router_weight(self.router_name, router[1], spec)
        self.transposed, self.concatenated = record(family).layout or (
            bool(getattr(experts, "is_transposed", False)), bool(getattr(experts, "is_concatenated", True)))
        self.gated = spec.gated
        self.post_norm_name = None if spec.post_norm_eps is None or self.on_layer else _post_norm(family, block)

    @property
    def router(self) -> nn.Module:
        return self.moe.get_submodule(self.router_name)

    @property
    def experts(self) -> nn.Module:
        return self.moe.get_submodule("experts")

    def route(self, x: torch.Tensor) -> Any:
        """Whatever the family's router module returns for x [T, H] (picks, weights, scores).

        A router that takes the selection bias as an argument (minimax_m2, afmoe: the block holds it) gets
        the block's tensor of that name; one that unpacks a [B, S, H] input gets x[None].
        """
        params = list(inspect.signature(self.router.forward).parameters.values())[1:]
        extra = [getattr(self.moe, p.name) for p in params if p.default is inspect.Parameter.empty
                 and isinstance(getattr(self.moe, p.name, None), torch.Tensor)]
        try:
            return self.router(x, *extra)
        except ValueError:
            return self.router(x[None], *extra)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The router's logits [T, E] for x [T, H], taken from the family's own router code."""
        linear_path = self.router_weight.rsplit(".", 1)[0]
        linear = self.moe.get_submodule(linear_path)
        if "." not in linear_path:
            # The weight sits on the router itself, which applies it with F.linear: no hook sees that call.
            return torch.nn.functional.linear(x, linear.get_parameter("weight"), getattr(linear, "bias", None))
        captured: list[torch.Tensor] = []
        handle = linear.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            self.route(x)
        finally:
            handle.remove()
        return captured[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The family's own output for x [T, H] (gemma4: experts on the router's picks + the dense mlp)."""
        if self.on_layer:
            _, weights, ids = self.route(x)
            return self.experts(x, ids, weights) + self.moe.get_submodule("mlp")(x)
        out = self.moe(x[None])
        out = (out[0] if isinstance(out, tuple) else out).reshape(x.shape)
        return out if self.layer_shared is None else out + self.layer_shared(x)

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The block's tensors under the reference MoEBlock's names and layouts (NOTES §3).

        Raises UnmappedBlock naming any float tensor outside the router that has no reference slot.
        """
        tensors = dict(self.moe.named_parameters()) | {n: b for n, b in self.moe.named_buffers()
                                                        if b.is_floating_point()}
        slots = self._router_slots(tensors) | self._expert_slots(tensors) | self._shared_slots(tensors)
        if self.post_norm_name is not None:
            name = f"{self.post_norm_name}.weight"
            slots["post_norm.weight"] = (name, tensors[name])
        used = {theirs for theirs, _ in slots.values()}
        unmapped = sorted(n for n in tensors if n not in used and not n.startswith(self.router_name + "."))
        if unmapped:
            raise UnmappedBlock(f"{self.family}: tensors with no slot in the reference block: {', '.join(unmapped)}")
        state = {ours: t.detach() for ours, (_, t) in slots.items()}
        fused = "shared_experts.gate_up_proj.weight"
        if fused in state:  # one Linear [2I, H], gate rows first, as the reference's gate_proj and up_proj
            state["shared_experts.gate_proj.weight"], state["shared_experts.up_proj.weight"] = \
                state.pop(fused).chunk(2, dim=0)
        return state

    def _router_slots(self, tensors: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
        """Reference name -> (their name, tensor) for the router weight, its bias and the selection tensors."""
        taken = {"gate.weight": self.router_weight}
        bias = self.router_weight[: -len("weight")] + "bias"
        if bias in tensors:
            taken["gate.bias"] = bias
        for name in tensors:
            for ours, suffixes in SELECTION_TENSORS.items():
                if name.endswith(suffixes):
                    taken[ours] = name
        slots = {ours: (theirs, tensors[theirs]) for ours, theirs in taken.items()}
        for ours in ("e_score_correction_bias", "per_expert_scale"):
            if ours in slots:  # ernie4_5_moe keeps its bias as [1, E]
                slots[ours] = (slots[ours][0], slots[ours][1].reshape(-1))
        return slots

    def _expert_slots(self, tensors: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
        """The fused expert tensors (and biases) in the reference's [E, 2I, H] / [E, H, I] layout, gates first;
        non-gated experts' up_proj in the reference's [E, I, H]."""
        slots = {}
        first = FIRST_PROJ_NAMES[0] if self.gated else FIRST_PROJ_NAMES[1]
        if f"experts.{first}" not in tensors:
            raise UnmappedBlock(f"{self.family}: its experts hold no {first}, which a "
                                f"{'gated' if self.gated else 'non-gated'} expert of the reference needs")
        for ours in (first, "down_proj"):
            name = f"experts.{ours}"
            gate_up = ours == "gate_up_proj"
            slots[name] = (name, self._expert_tensor(tensors[name], gate_up))
            if f"{name}_bias" in tensors:
                b = tensors[f"{name}_bias"]
                slots[f"{name}_bias"] = (f"{name}_bias", self._split_gate_up(b, -1) if gate_up else b)
        return slots

    def _shared_slots(self, tensors: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
        """The shared expert, its gate, and a shared MLP on the decoder layer, under the reference's names."""
        slots = {}
        for ours, theirs in (("shared_experts", self.shared_name), ("shared_expert_gate", self.shared_gate_name)):
            if theirs is None:
                continue
            for name in tensors:
                if name.startswith(f"{theirs}."):
                    slots[ours + name[len(theirs):]] = (name, tensors[name])
        for name, t in self.layer_shared.named_parameters() if self.layer_shared is not None else ():
            head, _, tail = name.partition(".")
            slots[f"shared_experts.{FUSED_SHARED_NAMES.get(head, head)}.{tail}"] = (f"layer_shared.{name}", t)
        return slots

    def _split_gate_up(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        # Interleaved experts alternate gate and up along the 2I axis; the reference puts all gates first.
        if self.concatenated:
            return t
        evens, odds = torch.arange(0, t.shape[dim], 2), torch.arange(1, t.shape[dim], 2)
        return torch.cat([t.index_select(dim, evens), t.index_select(dim, odds)], dim=dim)

    def _expert_tensor(self, t: torch.Tensor, gate_up: bool) -> torch.Tensor:
        if self.transposed:  # [E, H, 2I] -> [E, 2I, H]; [E, I, H] -> [E, H, I] (and back for a non-gated up)
            t = t.transpose(1, 2)
        if gate_up:
            t = self._split_gate_up(t, 1)
        return t.contiguous()


def _experts_on_layer(block: nn.Module) -> bool:
    """Whether `block`, the experts' parent, is a decoder layer (it holds the attention) whose dense `mlp` runs
    beside the experts, and whose MoE part is not switched off by its `enable_moe_block` flag."""
    return getattr(block, "enable_moe_block", True) is not False and all(
        isinstance(getattr(block, name, None), nn.Module) for name in ("self_attn", "mlp"))


def _post_norm(family: str, block: nn.Module) -> str:
    """The name of the block's one norm child (its class named a norm), the post-block norm its record says it
    applies to its output; UnmappedBlock unless there is exactly one."""
    norms = [name for name, child in block.named_children() if "Norm" in type(child).__name__]
    if len(norms) != 1:
        raise UnmappedBlock(f"{family}: its record says the block's output is normed, but the block holds "
                            f"{len(norms)} norm modules ({', '.join(norms) or 'none'}), expected one")
    return norms[0]


def _child(module: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return name, child
    return None


def _router_weight(router_name: str, router: nn.Module, spec: MoESpec) -> str:
    shape = (spec.num_experts, spec.hidden_size)
    hits = [n for n, p in router.named_parameters() if tuple(p.shape) == shape and n.endswith("weight")]
    if len(hits) != 1:
        raise UnmappedBlock(f"router {type(router).__name__} holds {len(hits)} [E, H] weights, expected one")
    return f"{router_name}.{hits[0]}"


def _moe_path(model: nn.Module) -> str | None:
    """The path of the first MoE block in `model`: the parent of the first experts module holding a 3-D first
    projection (FIRST_PROJ_NAMES); None when there is none."""
    experts_path = next((n for n, m in model.named_modules() if n.endswith("experts") and any(
        isinstance(t := getattr(m, name, None), torch.Tensor) and t.dim() == 3 for name in FIRST_PROJ_NAMES)), None)
    return None if experts_path is None else experts_path.rsplit(".", 1)[0]


def _block_path(family: str) -> str:
    """The path of the first MoE block of the family's tiny model (`_moe_path`); UnmappedBlock, saying whether the
    tiny config has any MoE layer, when there is none."""
    experts_path = _moe_path(tiny_model(family))
    if experts_path is None:
        no_layer = not tiny_spec(family).moe_layers
        raise UnmappedBlock(f"{family}: no experts module with a fused gate_up_proj or a non-gated up_proj"
                            + ("; its tiny config leaves no MoE layer (every layer is dense)" if no_layer else ""))
    return experts_path


def find_block(family: str) -> nn.Module:
    """The first MoE block module of the family's tiny model (shared, never modified: copy it to change it)."""
    return tiny_model(family).get_submodule(_block_path(family))


def decoder_layer(family: str) -> nn.Module:
    """The module holding the family's first MoE block: its decoder layer (for gemma4, whose router and experts sit
    on the layer, the layer's parent); shared, never modified."""
    path = _block_path(family)
    return tiny_model(family) if "." not in path else tiny_model(family).get_submodule(path.rsplit(".", 1)[0])


def block_attribute(family: str) -> str:
    """The name the family's decoder layer holds its first MoE block under (`mlp`, `block_sparse_moe`, ...)."""
    return _block_path(family).rsplit(".", 1)[-1]


def find_layer_shared(family: str) -> nn.Module | None:
    """The shared MLP on the first MoE block's decoder layer, beside the block (granite), or None."""
    if "." not in _block_path(family):
        return None
    layer = decoder_layer(family)
    found = _child(layer, LAYER_SHARED_NAMES)
    return None if found is None or found[1] is find_block(family) else found[1]


def real_block(family: str, spec: MoESpec) -> RealMoEBlock:
    """A fresh copy of the family's real MoE block (and any shared MLP beside it), ready to be filled and run.

    UnmappedBlock when no family record describes the block's code, or its record says it is not modelled.
    """
    _modelled(family, type(find_block(family)))
    layer_shared = find_layer_shared(family)
    return RealMoEBlock(family, spec, copy.deepcopy(find_block(family)),
                        None if layer_shared is None else copy.deepcopy(layer_shared))


def _modelled(family: str, block_class: type) -> None:
    """UnmappedBlock when no family record describes `block_class`'s code, or its record says it is not modelled."""
    facts = describing(block_class)
    if facts is None:
        raise UnmappedBlock(f"{family}: {undescribed(block_class)}")
    if facts.unmodelled:
        raise UnmappedBlock(f"{family}: {facts.unmodelled}")


def block_in(family: str, model: nn.Module) -> RealMoEBlock:
    """The first MoE block (and the shared MLP beside it) of `model`, a model of the family's tiny config other than
    `tiny_model`'s (the one a checkpoint was written from, or one `from_pretrained` loaded): its own modules, not
    copies. UnmappedBlock as `real_block`."""
    path = _moe_path(model)
    if path is None:
        raise UnmappedBlock(f"{family}: {type(model).__name__} holds no experts module with a 3-D first projection")
    block = model.get_submodule(path)
    _modelled(family, type(block))
    layer_shared = None
    if find_layer_shared(family) is not None:
        found = _child(model.get_submodule(path.rsplit(".", 1)[0]), LAYER_SHARED_NAMES)
        layer_shared = None if found is None else found[1]
    return RealMoEBlock(family, tiny_spec(family), block, layer_shared)


@functools.cache
def skip_reason(family: str) -> SkipReason | None:
    """Why the family has no block to run here, or None: not applicable (its record says it holds no routed-experts
    block, or `unbuildable` finds no model class for its config) or a harness limit (its record says the reference
    does not model it, or its block does not map onto the reference)."""
    facts = facts_named(family)
    if facts is not None and facts.unsupported:
        if not facts.routed_experts:
            return not_applicable(f"{family} holds no routed-experts block: {facts.unsupported}")
        return harness_limit(f"the reference does not model {family}: {facts.unsupported}")
    if facts is not None and facts.unmodelled:
        return harness_limit(f"{family}: {facts.unmodelled}")
    try:
        return unbuildable(lambda: real_block(family, tiny_spec(family)).reference_state())
    except UnmappedBlock as exc:
        return harness_limit(str(exc))
