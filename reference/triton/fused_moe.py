"""A fused MoE in Triton with the signature and the math of `reference.moe.experts_forward`.

out[t] = Σ_k weights[t, k] · down[ids[t, k]] @ (act(gate[ids[t, k]] @ x[t]) * (up[ids[t, k]] @ x[t]))
with gate_up_proj [E, 2I, H] (gate rows first) and down_proj [E, H, I], for float32, bfloat16 and
float16 (activations silu, gelu (erf), gelu_tanh, and the clamped SwiGLUs swiglu_oai (GPT-OSS) and swiglu_clamp);
with the expert biases gate_up_bias [E, 2I] and down_bias [E, H] where given (GPT-OSS), and the routing weight
applied to each pick's input instead of its output with `weight_on_input` (Llama 4). Steps:
1. `align_pairs` (`reference/triton/align.py`, one or two launches, no host sync): the T·K (token, pick) pairs
   grouped by expert, each expert's run padded to a multiple of BLOCK_M rows, so every BLOCK_M block of rows
   belongs to one expert;
2. `_gate_up_kernel`: per block, both projections of the gathered token rows in one pass over H, the
   activation in fp32 and the product h written once, in the input dtype (as the reference rounds it);
3. `_down_kernel`: h @ down[e]ᵀ times the pick's routing weight, written to the pair's row;
4. a sum over the K picks of each token (torch; K rows per token, so no atomics and a fixed order).
Accumulation is fp32; fp32 products use IEEE fp32 on the GPU (Triton would default to tf32).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from reference.triton import INTERPRETED, check_device, launch_context
from reference.triton.align import align_pairs
from reference.triton.core_ops import sigmoid

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "swiglu_oai", "swiglu_clamp")  # as reference.moe.glu computes them

# Deliberately broken variants, for tests that show the checks catch a kernel bug. Never use them.
BUGS = ("gelu_erf_for_tanh", "ignores_routing_weight", "ignores_down_bias")


@dataclass(frozen=True)
class GemmTile:
    """One kernel's launch shape: output columns and reduction depth per step, warps, pipeline stages."""

    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class MoEConfig:
    """block_m rows of one expert per program (the alignment of the sort), each kernel's tile, and how
    many row blocks sweep a column block together (L2 reuse of the weights)."""

    block_m: int
    gate_up: GemmTile
    down: GemmTile
    group_m: int = 8


# The tiles by the average rows per expert: small blocks for decode, 128-row wgmma tiles for prefill, with the
# 256-column down tiles that measured best on all three bench shapes on an H200 (bench/README.md). float32
# products are IEEE (no tensor cores): for parity, not speed, so one small tile that compiles in about a
# second (the prefill tiles took 20 s per kernel pair to compile in float32, on a 2-core CPU).
INTERPRETED_CONFIG = MoEConfig(16, GemmTile(32, 32, 4, 1), GemmTile(32, 32, 4, 1))
FLOAT32_CONFIG = MoEConfig(32, GemmTile(64, 32, 4, 2), GemmTile(64, 32, 4, 2))
DECODE_CONFIG = MoEConfig(16, GemmTile(64, 128, 4, 4), GemmTile(64, 128, 4, 4))
MIDDLE_CONFIG = MoEConfig(64, GemmTile(64, 64, 4, 4), GemmTile(128, 64, 4, 4))
PREFILL_CONFIG = MoEConfig(128, GemmTile(128, 64, 8, 3), GemmTile(256, 64, 8, 3))


def default_config(pairs: int, num_experts: int, dtype: torch.dtype = torch.bfloat16) -> MoEConfig:
    """Tiles by the average rows per expert and the dtype (see the constants above)."""
    if INTERPRETED:
        # The interpreter runs each program as numpy calls: few, small tiles keep CI fast.
        return INTERPRETED_CONFIG
    if dtype == torch.float32:
        return FLOAT32_CONFIG
    rows = pairs / num_experts
    if rows <= 16:
        return DECODE_CONFIG
    return MIDDLE_CONFIG if rows <= 128 else PREFILL_CONFIG


@triton.jit
def _glu(g, u, alpha, limit, ACT: tl.constexpr, BUG: tl.constexpr):
    """The gated product of the gate and up projections g, u (fp32), as reference.moe.glu computes it."""
    if ACT == "silu":
        return g * sigmoid(g) * u
    elif ACT == "gelu" or (ACT == "gelu_tanh" and BUG == "gelu_erf_for_tanh"):
        return 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476)) * u
    elif ACT == "gelu_tanh":  # 0.5·g·(1 + tanh(v)) == g·sigmoid(2v), v = sqrt(2/pi)·(g + 0.044715·g³)
        return g * sigmoid(1.5957691216057308 * (g + 0.044715 * g * g * g)) * u
    elif ACT == "swiglu_oai":  # gate clamped above, up on both sides; (up + 1) · gate · sigmoid(alpha · gate)
        g = tl.minimum(g, limit)
        return (tl.minimum(tl.maximum(u, -limit), limit) + 1.0) * g * sigmoid(alpha * g)
    else:  # swiglu_clamp: the same clamps, then silu(gate) · up
        g = tl.minimum(g, limit)
        return g * sigmoid(g) * tl.minimum(tl.maximum(u, -limit), limit)


@triton.jit
def _tile_of(pid, m_blocks, n_blocks, GROUP_M: tl.constexpr):
    """(row block, column block) of program `pid`: GROUP_M row blocks (mostly of one expert) sweep each
    column block together, so a weight tile is read from memory once and then from L2 GROUP_M times,
    and the group's gathered rows stay in L2 across the column blocks."""
    per_group = GROUP_M * n_blocks
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(m_blocks - first_m, GROUP_M)
    return first_m + (pid % per_group) % rows_in_group, (pid % per_group) // rows_in_group


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, h_ptr, pairs_ptr, block_expert_ptr, bias_ptr, weights_ptr,
    M_BLOCKS, P, TOP_K, HIDDEN, WIDTH,
    stride_xt, stride_xh, stride_we, stride_wn, stride_wh, stride_be,
    alpha, limit,
    ACT: tl.constexpr, BUG: tl.constexpr, PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, WEIGHT_ON_INPUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """h[row] = act(x[tok] @ gate[e]ᵀ + b_gate[e]) * (x[tok] @ up[e]ᵀ + b_up[e]) for the BLOCK_M sorted rows of one
    expert; with WEIGHT_ON_INPUT, x[tok] is first multiplied by the pick's routing weight (in x's dtype)."""
    pid_m, pid_n = _tile_of(tl.program_id(0), M_BLOCKS, (WIDTH + BLOCK_N - 1) // BLOCK_N, GROUP_M)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert < 0:  # past the last real block (the grid is sized without a host sync)
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(pairs_ptr + rows)
    row_ok = pair < P
    tok = tl.where(row_ok, pair // TOP_K, 0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < WIDTH
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + tok[:, None] * stride_xt + ks[None, :] * stride_xh
    g_ptrs = w_ptr + expert.to(tl.int64) * stride_we + cols[None, :] * stride_wn + ks[:, None] * stride_wh
    u_ptrs = g_ptrs + WIDTH * stride_wn
    acc_g = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    acc_u = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    if WEIGHT_ON_INPUT:  # the pick's weight rounded to x's dtype, as the reference scales x[token]
        pick_weight = tl.load(weights_ptr + pair, mask=row_ok, other=0.0).to(x_ptr.dtype.element_ty)
    for k0 in range(0, HIDDEN, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            g = tl.load(g_ptrs, mask=col_ok[None, :], other=0.0)
            u = tl.load(u_ptrs, mask=col_ok[None, :], other=0.0)
        else:
            k_ok = (k0 + ks) < HIDDEN
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            g = tl.load(g_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            u = tl.load(u_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if WEIGHT_ON_INPUT:
            a = (a * pick_weight[:, None]).to(x_ptr.dtype.element_ty)
        acc_g = tl.dot(a, g, acc_g, input_precision=PRECISION)
        acc_u = tl.dot(a, u, acc_u, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_xh
        g_ptrs += BLOCK_K * stride_wh
        u_ptrs += BLOCK_K * stride_wh
    if HAS_BIAS:
        b_ptrs = bias_ptr + expert.to(tl.int64) * stride_be + cols
        acc_g += tl.load(b_ptrs, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        acc_u += tl.load(b_ptrs + WIDTH, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    h = _glu(acc_g, acc_u, alpha, limit, ACT, BUG)
    h_ptrs = h_ptr + rows.to(tl.int64)[:, None] * WIDTH + cols[None, :]
    tl.store(h_ptrs, h.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _down_kernel(
    h_ptr, w_ptr, y_ptr, weights_ptr, pairs_ptr, block_expert_ptr, bias_ptr,
    M_BLOCKS, P, HIDDEN, WIDTH,
    stride_we, stride_wn, stride_wi, stride_be,
    BUG: tl.constexpr, PRECISION: tl.constexpr, EVEN_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, WEIGHT_ON_INPUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[pair] = weight[pair] · (h[row] @ down[e]ᵀ + b_down[e]) for the BLOCK_M sorted rows of one expert (without
    the weight where WEIGHT_ON_INPUT applied it to the input)."""
    pid_m, pid_n = _tile_of(tl.program_id(0), M_BLOCKS, (HIDDEN + BLOCK_N - 1) // BLOCK_N, GROUP_M)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert < 0:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(pairs_ptr + rows)
    row_ok = pair < P
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < HIDDEN
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = h_ptr + rows.to(tl.int64)[:, None] * WIDTH + ks[None, :]
    b_ptrs = w_ptr + expert.to(tl.int64) * stride_we + cols[None, :] * stride_wn + ks[:, None] * stride_wi
    acc = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    for k0 in range(0, WIDTH, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=col_ok[None, :], other=0.0)
        else:
            k_ok = (k0 + ks) < WIDTH
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_wi
    if HAS_BIAS and BUG != "ignores_down_bias":
        acc += tl.load(bias_ptr + expert.to(tl.int64) * stride_be + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if BUG != "ignores_routing_weight" and not WEIGHT_ON_INPUT:
        acc = acc * tl.load(weights_ptr + pair, mask=row_ok, other=0.0)[:, None]
    y_ptrs = y_ptr + pair.to(tl.int64)[:, None] * HIDDEN + cols[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _validate(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, gate_up_proj: torch.Tensor,
              down_proj: torch.Tensor, activation: str, gate_up_bias: torch.Tensor | None,
              down_bias: torch.Tensor | None) -> None:
    if x.dim() != 2 or gate_up_proj.dim() != 3 or down_proj.dim() != 3:
        raise ValueError(f"expected x [T, H], gate_up_proj [E, 2I, H], down_proj [E, H, I]; got "
                         f"{tuple(x.shape)}, {tuple(gate_up_proj.shape)}, {tuple(down_proj.shape)}")
    tokens, hidden = x.shape
    experts, two_width, gu_hidden = gate_up_proj.shape
    if two_width % 2 or gu_hidden != hidden or tuple(down_proj.shape) != (experts, hidden, two_width // 2):
        raise ValueError(f"gate_up_proj {tuple(gate_up_proj.shape)} and down_proj {tuple(down_proj.shape)} "
                         f"do not fit hidden size {hidden}")
    if ids.dim() != 2 or ids.shape[0] != tokens or tuple(weights.shape) != tuple(ids.shape):
        raise ValueError(f"weights {tuple(weights.shape)} and ids {tuple(ids.shape)} must both be [T={tokens}, K]")
    if ids.dtype not in (torch.int32, torch.int64) or not weights.is_floating_point():
        raise ValueError(f"ids must be int32/int64 and weights float, got {ids.dtype} and {weights.dtype}")
    if x.dtype not in SUPPORTED_DTYPES or gate_up_proj.dtype != x.dtype or down_proj.dtype != x.dtype:
        raise ValueError(f"x, gate_up_proj and down_proj must share one dtype of {SUPPORTED_DTYPES}; got "
                         f"{x.dtype}, {gate_up_proj.dtype}, {down_proj.dtype}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    if (gate_up_bias is None) != (down_bias is None):
        raise ValueError("give both expert biases (gate_up_bias [E, 2I] and down_bias [E, H]) or neither")
    biases = () if gate_up_bias is None or down_bias is None else (gate_up_bias, down_bias)
    if biases and (tuple(biases[0].shape) != (experts, two_width) or tuple(biases[1].shape) != (experts, hidden)
                   or any(b.dtype != x.dtype or b.stride(-1) != 1 for b in biases)):
        raise ValueError(f"gate_up_bias {tuple(biases[0].shape)} and down_bias {tuple(biases[1].shape)} must be "
                         f"[{experts}, {two_width}] and [{experts}, {hidden}] in {x.dtype}, each row contiguous")
    check_device(x, weights, ids, gate_up_proj, down_proj, *biases)


def launch_experts(
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
    config: MoEConfig | None = None,
    bug: str = "",
) -> torch.Tensor:
    """`experts_forward` with its launch configuration exposed, for tuning and the benchmark."""
    _validate(x, weights, ids, gate_up_proj, down_proj, activation, gate_up_bias, down_bias)
    if bug and bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; known: {', '.join(BUGS)}")
    tokens, hidden = x.shape
    experts, two_width, _ = gate_up_proj.shape
    width = two_width // 2
    top_k = ids.shape[1]
    pairs = tokens * top_k
    if pairs == 0:
        return torch.zeros_like(x)
    cfg = config or default_config(pairs, experts, x.dtype)
    rows, block_expert = align_pairs(ids, experts, cfg.block_m)
    h = torch.empty(rows.numel(), width, dtype=x.dtype, device=x.device)
    y = torch.empty(pairs, hidden, dtype=x.dtype, device=x.device)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"  # tf32 only ever applies to fp32 operands
    gu, dn = cfg.gate_up, cfg.down
    flat_weights = weights.reshape(-1)
    if flat_weights.dtype != torch.float32:
        flat_weights = flat_weights.float()
    has_bias = gate_up_bias is not None and down_bias is not None
    # Without biases the kernels never read their pointers: any tensor of the launch stands in.
    gu_bias = gate_up_bias if gate_up_bias is not None else gate_up_proj
    dn_bias = down_bias if down_bias is not None else down_proj
    with launch_context():
        _gate_up_kernel[(block_expert.numel() * triton.cdiv(width, gu.block_n),)](
            x, gate_up_proj, h, rows, block_expert, gu_bias, flat_weights,
            block_expert.numel(), pairs, top_k, hidden, width,
            x.stride(0), x.stride(1), gate_up_proj.stride(0), gate_up_proj.stride(1), gate_up_proj.stride(2),
            gu_bias.stride(0), float(glu_alpha), float(glu_limit),
            ACT=activation, BUG=bug, PRECISION=precision, EVEN_K=hidden % gu.block_k == 0,
            HAS_BIAS=has_bias, WEIGHT_ON_INPUT=weight_on_input,
            BLOCK_M=cfg.block_m, BLOCK_N=gu.block_n, BLOCK_K=gu.block_k, GROUP_M=cfg.group_m,
            num_warps=gu.num_warps, num_stages=gu.num_stages,
        )
        _down_kernel[(block_expert.numel() * triton.cdiv(hidden, dn.block_n),)](
            h, down_proj, y, flat_weights, rows, block_expert, dn_bias,
            block_expert.numel(), pairs, hidden, width,
            down_proj.stride(0), down_proj.stride(1), down_proj.stride(2), dn_bias.stride(0),
            BUG=bug, PRECISION=precision, EVEN_K=width % dn.block_k == 0,
            HAS_BIAS=has_bias, WEIGHT_ON_INPUT=weight_on_input,
            BLOCK_M=cfg.block_m, BLOCK_N=dn.block_n, BLOCK_K=dn.block_k, GROUP_M=cfg.group_m,
            num_warps=dn.num_warps, num_stages=dn.num_stages,
        )
    return y if top_k == 1 else y.view(tokens, top_k, hidden).sum(1)


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
    """Σ over the K picks of weight · down(act(gate x) · up x), [T, H] in x's dtype, with the keywords of
    `reference.moe.experts_forward` it computes (expert biases, the weight on the input, the SwiGLU clamps); see the
    module doc.

    ids must lie in 0..E-1 (not checked: that would wait on the device). Raises ValueError before any
    launch on mismatched shapes, dtypes, an unknown activation or tensors on the wrong device.
    """
    return launch_experts(x, weights, ids, gate_up_proj, down_proj, activation, gate_up_bias=gate_up_bias,
                          down_bias=down_bias, weight_on_input=weight_on_input, glu_alpha=glu_alpha,
                          glu_limit=glu_limit)


def experts_forward_with_bug(bug: str) -> Callable[..., torch.Tensor]:
    """An `experts_forward` whose kernels have the deliberate bug `bug` (one of BUGS), for tests."""
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; known: {', '.join(BUGS)}")
    return functools.partial(launch_experts, bug=bug)
