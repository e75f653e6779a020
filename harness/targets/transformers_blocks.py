"""The real transformers MoE block of a family, found in its tiny model and mapped onto the reference.

Where a block sits and how its weights are laid out is read from the module tree and from the flags
transformers' experts decorator sets (`is_transposed`, `is_concatenated`); `LAYOUT_OVERRIDES` holds the
families whose experts carry no flags. Nothing here re-implements the family: `forward` calls its code.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.families import tiny_config
from reference.config import MoESpec

ROUTER_NAMES = ("gate", "router")
SHARED_NAMES = ("shared_experts", "shared_expert", "shared_mlp")
SHARED_GATE_NAMES = ("shared_expert_gate",)
# Families whose experts module does not declare its layout: (transposed, concatenated gate/up).
LAYOUT_OVERRIDES: dict[str, tuple[bool, bool]] = {
    "llama4": (True, True),
    "llama4_text": (True, True),
}
# Families whose tiny config needs a field set for its MoE block to exist at all.
BUILD_OVERRIDES: dict[str, dict[str, Any]] = {
    "gemma4": {"enable_moe_block": True},
    "gemma4_text": {"enable_moe_block": True},
}


class UnmappedBlock(Exception):
    """The family's block holds tensors, or a structure, the reference block does not model."""


@dataclass
class HFBlock:
    """One real MoE block and how to read it: the router's linear, experts, shared MLP and gate."""

    family: str
    path: str
    block: nn.Module
    router_weight: str  # parameter path inside `block` of the [E, H] router matrix
    experts: nn.Module
    transposed: bool
    concatenated: bool
    shared: nn.Module | None
    shared_gate: nn.Module | None
    on_layer: bool  # gemma4: router and experts sit on the decoder layer beside a dense `mlp`

    def tensor(self, name: str) -> torch.Tensor:
        return self.block.get_parameter(name) if name in dict(self.block.named_parameters()) \
            else self.block.get_buffer(name)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The router's logits [T, E] for x [T, H], captured from the family's own router code."""
        linear_path = self.router_weight.rsplit(".", 1)[0]
        linear = self.block.get_submodule(linear_path)
        if "." not in linear_path:
            # The weight sits on the router itself, which applies it with F.linear: no hook sees that call.
            return torch.nn.functional.linear(x, linear.weight, getattr(linear, "bias", None))
        captured: list[torch.Tensor] = []
        handle = linear.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            self.route(x)
        finally:
            handle.remove()
        return captured[0]

    def route(self, x: torch.Tensor) -> Any:
        """Whatever the family's router module returns for x [T, H] (picks, weights, scores)."""
        router = self.block.get_submodule(self.router_weight.split(".")[0])
        if "e_score_correction_bias" in inspect.signature(router.forward).parameters:
            return router(x, self.block.e_score_correction_bias)  # minimax_m2 keeps the bias on the block
        return router(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's own output for x [T, H] (gemma4: experts(router picks) + the parallel dense mlp)."""
        if self.on_layer:
            _, weights, ids = self.route(x)
            return self.experts(x, ids, weights) + self.block.mlp(x)
        out = self.block(x[None])
        out = out[0] if isinstance(out, tuple) else out
        return out.reshape(x.shape)

    def reference_state(self) -> dict[str, torch.Tensor]:
        """The block's tensors under the reference MoEBlock's names and layouts (NOTES §3)."""
        state = {"gate.weight": self.tensor(self.router_weight)}
        bias_name = self.router_weight[: -len("weight")] + "bias"
        if bias_name in dict(self.block.named_parameters()):
            state["gate.bias"] = self.tensor(bias_name)
        for name, tensor in list(self.block.named_parameters()) + list(self.block.named_buffers()):
            if name.endswith("e_score_correction_bias"):
                state["e_score_correction_bias"] = tensor
            elif name.endswith("per_expert_scale"):
                state["per_expert_scale"] = tensor
        for ours in ("gate_up_proj", "down_proj"):
            state[f"experts.{ours}"] = self._expert_tensor(getattr(self.experts, ours), ours == "gate_up_proj")
            bias = getattr(self.experts, f"{ours}_bias", None)
            if bias is not None:
                state[f"experts.{ours}_bias"] = self._split_gate_up(bias) if ours == "gate_up_proj" else bias
        if self.shared is not None:
            for proj in ("gate_proj", "up_proj", "down_proj"):
                state[f"shared_experts.{proj}.weight"] = getattr(self.shared, proj).weight
        if self.shared_gate is not None:
            state["shared_expert_gate.weight"] = self.shared_gate.weight
        return {k: v.detach() for k, v in state.items()}

    def _split_gate_up(self, t: torch.Tensor) -> torch.Tensor:
        # Interleaved experts alternate gate and up along the 2I axis (last here); ours put gate first.
        return t if self.concatenated else torch.cat([t[..., 0::2], t[..., 1::2]], dim=-1)

    def _expert_tensor(self, t: torch.Tensor, gate_up: bool) -> torch.Tensor:
        if not self.transposed:  # [E, 2I, H] / [E, H, I] already
            if gate_up and not self.concatenated:
                return torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)
            return t
        t = t.transpose(1, 2)  # [E, H, 2I] -> [E, 2I, H]; [E, I, H] -> [E, H, I]
        if gate_up and not self.concatenated:
            t = torch.cat([t[:, 0::2], t[:, 1::2]], dim=1)
        return t.contiguous()


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
    return f"{router_name}.{hits[0]}" if hits[0] != "weight" else f"{router_name}.weight"


def find_block(family: str, model: nn.Module, spec: MoESpec) -> HFBlock:
    """The first MoE block of `model`; UnmappedBlock when its structure is not one the reference models."""
    experts_path = next((n for n, m in model.named_modules()
                         if n.endswith("experts") and isinstance(getattr(m, "gate_up_proj", None), torch.Tensor)), None)
    if experts_path is None:
        raise UnmappedBlock(f"{family}: no experts module with a fused gate_up_proj")
    path = experts_path.rsplit(".", 1)[0]
    block = model.get_submodule(path)
    experts = block.get_submodule("experts")
    router = _child(block, ROUTER_NAMES)
    if router is None:
        raise UnmappedBlock(f"{family}: block {type(block).__name__} has no child named {' or '.join(ROUTER_NAMES)}")
    on_layer = isinstance(getattr(block, "mlp", None), nn.Module) and getattr(block, "enable_moe_block", False)
    shared = ("mlp", block.mlp) if on_layer else _child(block, SHARED_NAMES)
    shared_gate = _child(block, SHARED_GATE_NAMES)
    transposed, concatenated = LAYOUT_OVERRIDES.get(family, (
        bool(getattr(experts, "is_transposed", False)), bool(getattr(experts, "is_concatenated", True))))
    return HFBlock(family=family, path=path, block=block, router_weight=_router_weight(*router, spec),
                   experts=experts, transposed=transposed, concatenated=concatenated,
                   shared=shared[1] if shared else None, shared_gate=shared_gate[1] if shared_gate else None,
                   on_layer=on_layer)


@functools.cache
def tiny_model(family: str) -> nn.Module:
    """The family's tiny causal LM (built once per process, eval mode, float32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config(family, **BUILD_OVERRIDES.get(family, {})))
    return model.eval()
