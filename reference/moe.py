"""A readable torch MoE block: router, fused experts, shared experts, and a pad/unpad runner.

Every parameter and buffer is read from `self` at call time (never captured in a closure), so
`torch.func.functional_call` substitution reaches all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from reference.config import MoESpec
from reference.routing import route

ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu2": lambda x: F.relu(x).square(),
}

BlockT = TypeVar("BlockT", bound=nn.Module)


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap): x bounded smoothly to (-cap, cap), about x where |x| << cap."""
    return torch.tanh(x / cap) * cap


def glu(gate: torch.Tensor, up: torch.Tensor, activation: str, alpha: float = 1.702, limit: float = 7.0,
        softcaps: tuple[float, float] | None = None) -> torch.Tensor:
    """The gated product of an expert: act(gate) * up (NOTES §3), or one of the clamped or capped SwiGLUs:
    gpt_oss's `swiglu_oai` (gate clamped above and up on both sides at `limit`, then (up + 1) * gate *
    sigmoid(alpha * gate)); `swiglu_clamp` (the same clamps, then silu(gate) * up: glm5_next);
    `swiglu_softcap` (softcap(gate) * sigmoid(gate) * softcap(up), the caps `softcaps` = (gate, up), computed
    in float32 at least: inkling2)."""
    if activation == "swiglu_oai":
        gate = gate.clamp(max=limit)
        return (up.clamp(-limit, limit) + 1) * gate * torch.sigmoid(alpha * gate)
    if activation == "swiglu_clamp":
        return F.silu(gate.clamp(max=limit)) * up.clamp(-limit, limit)
    if activation == "swiglu_softcap":
        if softcaps is None:
            raise ValueError("swiglu_softcap needs softcaps=(gate cap, up cap)")
        wide = torch.promote_types(gate.dtype, torch.float32)
        g, u = gate.to(wide), up.to(wide)
        return (softcap(g, softcaps[0]) * torch.sigmoid(g) * softcap(u, softcaps[1])).to(gate.dtype)
    return ACTIVATION_FNS[activation](gate) * up


def expert_mlp_hidden(h: torch.Tensor, activation: str, gated: bool = True, alpha: float = 1.702, limit: float = 7.0,
                      softcaps: tuple[float, float] | None = None) -> torch.Tensor:
    """The hidden activation of an expert MLP from its first projection h: glu of h's halves [gate | up] when
    `gated`, else act(h) (a non-gated MLP, down(act(up x)): nemotron_h's relu2)."""
    if not gated:
        return ACTIVATION_FNS[activation](h)
    gate, up = h.chunk(2, dim=-1)
    return glu(gate, up, activation, alpha, limit, softcaps)


def activation_kwargs(spec: MoESpec) -> dict[str, Any]:
    """The activation keywords of `experts_forward` that `spec` sets (gatedness, the SwiGLU clamps and caps)."""
    return {"gated": spec.gated, "glu_alpha": spec.glu_alpha, "glu_limit": spec.glu_limit,
            "glu_softcaps": spec.glu_softcaps}


class FusedExperts(nn.Module):
    """E experts in the fused 3-D layout: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I].

    Non-gated experts (`spec.gated` False) hold up_proj [E, I, H] in gate_up_proj's place. With `bias`, also
    gate_up_proj_bias [E, 2I] (up_proj_bias [E, I]) and down_proj_bias [E, H]. Reads every tensor at call time.
    """

    def __init__(self, spec: MoESpec, dtype: torch.dtype) -> None:
        super().__init__()
        e, h, i = spec.num_experts, spec.hidden_size, spec.intermediate_size
        self.spec = spec
        self.activation = spec.activation
        self.first_name = "gate_up_proj" if spec.gated else "up_proj"
        first = 2 * i if spec.gated else i
        self.register_parameter(self.first_name, nn.Parameter(torch.empty(e, first, h, dtype=dtype)))
        self.down_proj = nn.Parameter(torch.empty(e, h, i, dtype=dtype))
        if spec.expert_bias:
            self.register_parameter(f"{self.first_name}_bias", nn.Parameter(torch.empty(e, first, dtype=dtype)))
            self.down_proj_bias = nn.Parameter(torch.empty(e, h, dtype=dtype))

    @property
    def first_proj(self) -> torch.Tensor:
        """The first projection: gate_up_proj [E, 2I, H], or up_proj [E, I, H] of non-gated experts."""
        return getattr(self, self.first_name)

    @property
    def first_bias(self) -> torch.Tensor | None:
        return getattr(self, f"{self.first_name}_bias", None)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return experts_forward(
            x, weights, ids, self.first_proj, self.down_proj, self.activation,
            gate_up_bias=self.first_bias,
            down_bias=getattr(self, "down_proj_bias", None),
            weight_on_input=self.spec.weight_on_input,
            **activation_kwargs(self.spec),
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
    glu_softcaps: tuple[float, float] | None = None,
    gated: bool = True,
) -> torch.Tensor:
    """Sum over the K picks of w * down(glu(gate x, up x)); accumulates in float32 (float64 stays).

    With `weight_on_input` (llama4) each pick computes down(glu(gate (w x), up (w x))) instead. Not `gated`,
    gate_up_proj is the experts' up projection [E, I, H] and each pick computes down(act(up x)).
    """
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.zeros(x.shape, dtype=acc_dtype, device=x.device)
    for expert in torch.unique(ids).tolist():
        token, slot = torch.where(ids == expert)
        w = weights[token, slot, None]
        inp = x[token] * w.to(x.dtype) if weight_on_input else x[token]
        bias = None if gate_up_bias is None else gate_up_bias[expert]
        h = expert_mlp_hidden(F.linear(inp, gate_up_proj[expert], bias), activation, gated, glu_alpha, glu_limit,
                              glu_softcaps)
        y = F.linear(h, down_proj[expert], None if down_bias is None else down_bias[expert])
        out.index_add_(0, token, y.to(acc_dtype) if weight_on_input else y.to(acc_dtype) * w.to(acc_dtype))
    return out.to(x.dtype)


class DenseMLP(nn.Module):
    """down(glu(gate x, up x)) with separate gate/up/down Linear layers (shared experts); not `gated`,
    down(act(up x)) with up/down only."""

    def __init__(self, hidden: int, width: int, activation: str, dtype: torch.dtype,
                 glu_alpha: float = 1.702, glu_limit: float = 7.0, glu_softcaps: tuple[float, float] | None = None,
                 gated: bool = True) -> None:
        super().__init__()
        self.activation = activation
        self.glu_alpha, self.glu_limit, self.glu_softcaps = glu_alpha, glu_limit, glu_softcaps
        self.gate_proj = nn.Linear(hidden, width, bias=False, dtype=dtype) if gated else None
        self.up_proj = nn.Linear(hidden, width, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(width, hidden, bias=False, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(ACTIVATION_FNS[self.activation](self.up_proj(x)))
        return self.down_proj(glu(self.gate_proj(x), self.up_proj(x), self.activation, self.glu_alpha, self.glu_limit,
                                  self.glu_softcaps))


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x²) + eps) over the last dim, normalised in float32 (at least), the product in x's
    dtype (the Llama-style RMSNorm: axk1's post-block norm)."""

    def __init__(self, hidden: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


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
                                           spec.glu_limit, spec.glu_softcaps, spec.gated)
            if spec.shared_combine == "sigmoid_gate":
                self.shared_expert_gate = nn.Linear(spec.hidden_size, 1, bias=False, dtype=dtype)
        self.post_norm = None if spec.post_norm_eps is None else RMSNorm(spec.hidden_size, spec.post_norm_eps, dtype)

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

    def combine(self, x: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
        """The block's output from x [T, H] and its routed output [T, H]: shared + routed, through the post-block
        norm when the block has one."""
        shared = self.shared(x)
        out = routed if shared is None else shared + routed
        return out if self.post_norm is None else self.post_norm(out)

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., H] -> [..., H]; `router_logits` [T, E] replaces the gate's (to compare with other routers)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        return self.combine(flat, self.routed(flat, router_logits)).reshape(shape)


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
        return self.block.combine(flat, routed).reshape(x.shape)

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
            F.pad(experts.first_proj, (0, extra)),
            F.pad(experts.down_proj, (0, 0, 0, extra)),
            experts.activation,
            gate_up_bias=experts.first_bias,
            down_bias=None if down_bias is None else F.pad(down_bias, (0, extra)),
            weight_on_input=spec.weight_on_input,
            **activation_kwargs(spec),
        )
