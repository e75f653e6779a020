"""A readable torch MoE block: router, fused experts, shared experts, and a pad/unpad runner.

Every parameter and buffer is read from `self` at call time (never captured in a closure), so
`torch.func.functional_call` substitution reaches all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from reference.config import MoESpec
from reference.routing import route

ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}

BlockT = TypeVar("BlockT", bound=nn.Module)


def glu(gate: torch.Tensor, up: torch.Tensor, activation: str, alpha: float = 1.702, limit: float = 7.0) -> torch.Tensor:
    """The gated product of an expert: act(gate) * up, or gpt_oss's clamped `swiglu_oai` (NOTES §3)."""
    if activation == "swiglu_oai":
        gate = gate.clamp(max=limit)
        return (up.clamp(-limit, limit) + 1) * gate * torch.sigmoid(alpha * gate)
    return ACTIVATION_FNS[activation](gate) * up


class FusedExperts(nn.Module):
    """E experts in the fused 3-D layout: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].

    With `bias`, also gate_up_proj_bias [E, 2I] and down_proj_bias [E, H]. Reads every tensor at call time.
    """

    def __init__(self, spec: MoESpec, dtype: torch.dtype) -> None:
        super().__init__()
        e, h, i = spec.num_experts, spec.hidden_size, spec.intermediate_size
        self.spec = spec
        self.activation = spec.activation
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h, dtype=dtype))
        self.down_proj = nn.Parameter(torch.empty(e, h, i, dtype=dtype))
        if spec.expert_bias:
            self.gate_up_proj_bias = nn.Parameter(torch.empty(e, 2 * i, dtype=dtype))
            self.down_proj_bias = nn.Parameter(torch.empty(e, h, dtype=dtype))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return experts_forward(
            x, weights, ids, self.gate_up_proj, self.down_proj, self.activation,
            gate_up_bias=getattr(self, "gate_up_proj_bias", None),
            down_bias=getattr(self, "down_proj_bias", None),
            weight_on_input=self.spec.weight_on_input,
            glu_alpha=self.spec.glu_alpha,
            glu_limit=self.spec.glu_limit,
        )


def experts_forward(
    x: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    activation: str,
    *,
    gate_up_bias: torch.Tensor | None = None,
    down_bias: torch.Tensor | None = None,
    weight_on_input: bool = False,
    glu_alpha: float = 1.702,
    glu_limit: float = 7.0,
) -> torch.Tensor:
    """Sum over the K picks of w * down(glu(gate x, up x)); accumulates in float32 (float64 stays).

    With `weight_on_input` (llama4) each pick computes down(glu(gate (w x), up (w x))) instead.
    """
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.zeros(x.shape, dtype=acc_dtype, device=x.device)
    for expert in torch.unique(ids).tolist():
        token, slot = torch.where(ids == expert)
        w = weights[token, slot, None]
        inp = x[token] * w.to(x.dtype) if weight_on_input else x[token]
        bias = None if gate_up_bias is None else gate_up_bias[expert]
        gate, up = F.linear(inp, gate_up_proj[expert], bias).chunk(2, dim=-1)
        y = F.linear(glu(gate, up, activation, glu_alpha, glu_limit), down_proj[expert],
                     None if down_bias is None else down_bias[expert])
        out.index_add_(0, token, y.to(acc_dtype) if weight_on_input else y.to(acc_dtype) * w.to(acc_dtype))
    return out.to(x.dtype)


class DenseMLP(nn.Module):
    """down(glu(gate x, up x)) with separate gate/up/down Linear layers (shared experts)."""

    def __init__(self, hidden: int, width: int, activation: str, dtype: torch.dtype,
                 glu_alpha: float = 1.702, glu_limit: float = 7.0) -> None:
        super().__init__()
        self.activation = activation
        self.glu_alpha, self.glu_limit = glu_alpha, glu_limit
        self.gate_proj = nn.Linear(hidden, width, bias=False, dtype=dtype)
        self.up_proj = nn.Linear(hidden, width, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(width, hidden, bias=False, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(glu(self.gate_proj(x), self.up_proj(x), self.activation, self.glu_alpha, self.glu_limit))


class MoEBlock(nn.Module):
    """The reference MoE block for one `MoESpec`: out = routed(x) [+ shared(x), gated or not]."""

    def __init__(self, spec: MoESpec, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.spec = spec
        self.gate = nn.Linear(spec.hidden_size, spec.num_experts, bias=spec.router_bias, dtype=dtype)
        self.experts = FusedExperts(spec, dtype)
        if spec.routing.selection_bias:
            self.register_buffer("e_score_correction_bias", torch.zeros(spec.num_experts, dtype=torch.float32))
        if spec.routing.per_expert_scale:
            self.per_expert_scale = nn.Parameter(torch.ones(spec.num_experts, dtype=torch.float32))
        self.shared_experts: DenseMLP | None = None
        self.shared_expert_gate: nn.Linear | None = None
        if spec.shared_combine != "none":
            width = spec.shared_intermediate_size or spec.intermediate_size
            self.shared_experts = DenseMLP(spec.hidden_size, width, spec.activation, dtype, spec.glu_alpha,
                                           spec.glu_limit)
            if spec.shared_combine == "sigmoid_gate":
                self.shared_expert_gate = nn.Linear(spec.hidden_size, 1, bias=False, dtype=dtype)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x)

    def reference_state(self) -> dict[str, torch.Tensor]:
        """Its tensors under the reference names (the same contract real blocks' adapters meet)."""
        return {k: v.detach() for k, v in self.state_dict().items()}

    def routing(self, logits: torch.Tensor, oracle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return route(
            logits.float(),
            self.spec.routing,
            bias=getattr(self, "e_score_correction_bias", None),
            per_expert_scale=getattr(self, "per_expert_scale", None),
            oracle=oracle,
        )

    def shared(self, x: torch.Tensor) -> torch.Tensor | None:
        """The shared-expert term as it is added to the routed output (gate applied), or None."""
        if self.shared_experts is None:
            return None
        y = self.shared_experts(x)
        if self.shared_expert_gate is not None:
            y = torch.sigmoid(self.shared_expert_gate(x)) * y
        return y

    def routed(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        weights, ids = self.routing(self.router_logits(x) if logits is None else logits,
                                    oracle=x.dtype == torch.float64)
        return self.experts(x, weights, ids)

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., H] -> [..., H]; `router_logits` [T, E] replaces the gate's (to compare with other routers)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        out = self.routed(flat, router_logits)
        shared = self.shared(flat)
        if shared is not None:
            out = out + shared
        return out.reshape(shape)


def init_block(block: BlockT, seed: int, scale: float = 0.5) -> BlockT:
    """Fill every parameter and float buffer with seeded normal values (per-expert scales and biases too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in list(block.named_parameters()) + list(block.named_buffers()):
            if tensor.is_floating_point():
                fan_in = tensor.shape[-1] if tensor.dim() > 1 else 1
                values = torch.randn(tensor.shape, generator=gen, dtype=torch.float64) * scale / math.sqrt(fan_in)
                tensor.copy_(values.to(tensor.dtype))
        scale_param = getattr(block, "per_expert_scale", None)
        if isinstance(scale_param, torch.Tensor):
            scale_param.copy_(torch.rand(scale_param.shape, generator=gen, dtype=torch.float64).add(0.5))
    return block


def build_block(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> MoEBlock:
    """A reference block for `spec` with seeded weights."""
    block = MoEBlock(spec, dtype)
    init_block(block, seed)
    return block


def pad_to(size: int, alignment: int) -> int:
    """The smallest multiple of `alignment` (elements) that is >= size; alignment <= 1 means none."""
    return size if alignment <= 1 else -(-size // alignment) * alignment


class PaddedMoERunner(nn.Module):
    """Runs a block's routed experts on a hidden dim zero-padded to `alignment`, trimming before any add.

    Guarantees: output shape == input shape; output == block(x) up to rounding; a no-op when aligned.
    """

    def __init__(self, block: MoEBlock, alignment: int) -> None:
        super().__init__()
        self.block = block
        self.alignment = alignment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = x.shape[-1]
        padded = pad_to(hidden, self.alignment)
        flat = x.reshape(-1, hidden)
        logits = self.block.router_logits(flat)
        routed = self.routed_padded(flat, logits, padded)[..., :hidden]
        shared = self.block.shared(flat)
        out = routed if shared is None else shared + routed
        return out.reshape(x.shape)

    def routed_padded(self, flat: torch.Tensor, logits: torch.Tensor, padded: int) -> torch.Tensor:
        """The routed output on the padded hidden dim [T, padded] (as a kernel with that alignment would)."""
        extra = padded - flat.shape[-1]
        experts = self.block.experts
        weights, ids = self.block.routing(logits)
        if extra == 0:
            return experts(flat, weights, ids)
        down_bias = getattr(experts, "down_proj_bias", None)
        spec = experts.spec
        return experts_forward(
            F.pad(flat, (0, extra)),
            weights,
            ids,
            F.pad(experts.gate_up_proj, (0, extra)),
            F.pad(experts.down_proj, (0, 0, 0, extra)),
            experts.activation,
            gate_up_bias=getattr(experts, "gate_up_proj_bias", None),
            down_bias=None if down_bias is None else F.pad(down_bias, (0, extra)),
            weight_on_input=spec.weight_on_input,
            glu_alpha=spec.glu_alpha,
            glu_limit=spec.glu_limit,
        )
