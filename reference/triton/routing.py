"""Triton routing: logits [T, E] -> (weights float32 [T, K], ids int32 [T, K]) for the variants of NOTES §2.

`route` has the signature and the semantics of `reference.routing.route` (without `oracle`) for every
variant of ROUTING_VARIANTS. Guarantees:
- the ids are the top K of the variant's float32 selection score in descending order; among equal
  scores the LOWER expert index comes first, exactly as the reference's stable sort, so the ids equal
  the reference's wherever both compute the same float32 scores (softmax_topk selects on the logits,
  which orders experts as their softmax does, but the reference's rounded probabilities can tie where
  the logits do not);
- the weights are computed from the exact logits of the picked experts and match the reference's
  float32 weights to about 1e-6 relative (sigmoid weights computed in float64, as the reference's);
- fp32, bf16, fp16 (and fp64, computed in fp32 like the reference) logits, any strides, E not a power
  of two (padded lanes never win, not even over -inf), K == E;
- bad inputs (wrong rank, non-float, K outside 1..E, bias or per-expert scale not [E], tensors on the
  wrong device) raise RoutingInputError (a ValueError) before anything is launched.

How the selection works: a program holds BLOCK_T tokens × BLOCK_E lanes in registers. Each score is
mapped to an int32 whose signed order is the float order, its low log2(BLOCK_E) bits are replaced by
(BLOCK_E - 1 - lane), so a row's keys are unique and the largest is the best score and, among ties, the
lowest lane. The first pick is a max; each later one is the last pick plus the largest unsigned
(key - last pick), which is the step down to the largest key under it (one subtraction and one max per
score); K rounds pick K experts. Replacing those low bits merges scores that differ only in them
(relative gap under about 2^-(23 - log2 BLOCK_E)); where two picks, or the K-th pick and the best
unpicked key, lie that close, the kernel redoes that program's rows with an exact two-reduction
selection, so the result is always exact.
Scores that are 16-bit logits have those bits zero already: nothing merges, so no redo is needed (KEYS_EXACT).

Compiled once per variant, dtype, expert bucket (BLOCK_E) and launch: K, the groups and T are run-time
values (K bucketed to a power of two BLOCK_K; rounds unrolled up to a bucket of 8, looped above).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from reference.config import RoutingKnobs
from reference.routing import RoutingInputError, validate_routing_inputs
from reference.triton import INTERPRETED, check_device, launch_context
from reference.triton.core_ops import max_along, min_along, sigmoid, sum_along
from reference.variants import variant

# The variants the kernel has code for; `route` refuses the rest rather than mis-route them. The kernel takes
# the name itself as a constexpr: module-level constants would be checked for change by Triton on every launch.
KERNEL_VARIANTS = ("softmax_topk", "gemma4", "topk_softmax", "sigmoid_bias", "grouped", "sigmoid_topk_on_logits")

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

# Deliberately broken variants, for tests that show the checks catch a kernel bug. Never route with them.
BUGS = ("skip_renorm", "weights_from_biased_score")


@triton.jit
def _packed_keys(s, lanes, lane_ok, FULL_E: tl.constexpr, BLOCK_E: tl.constexpr):
    """int32 keys ordered like the fp32 scores `s`, low bits (BLOCK_E - 1 - lane): unique per lane."""
    s = s + 0.0  # -0.0 and 0.0 are equal scores; give them one key (-0.0 + 0.0 is 0.0)
    bits = s.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip magnitude bits
    keys = (ordered & (-BLOCK_E)) | (BLOCK_E - 1 - lanes)[None, :]
    if not FULL_E:
        keys = tl.where(lane_ok[None, :], keys, -(2**31))  # padded lanes lose to every real one, -inf too
    return keys


@triton.jit
def _exact_top_k(s, lanes, lane_ok, cols, K, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    """ids [BLOCK_T, BLOCK_K] of the top K of `s` by exact value, lower lane first among ties."""
    free = tl.broadcast_to(lane_ok[None, :], s.shape)
    ids = tl.full([BLOCK_T, BLOCK_K], 0, tl.int32)
    for r in range(K):
        best = max_along(tl.where(free, s, float("-inf")), 1)
        # A free lane equal to the best; -inf lanes still count when nothing better is left.
        hit = free & (s == best[:, None])
        pick = min_along(tl.where(hit, lanes[None, :], 2**30), 1)
        ids = tl.where(cols[None, :] == r, pick[:, None], ids)
        free = free & (lanes[None, :] != pick[:, None])
    return ids


@triton.jit
def _step_below(keys, pick):
    """Per row, (its largest key under `pick`) - `pick`, modulo 2^32, as a uint32.

    Modulo 2^32 a key under the pick is a step near 2^32 and any other key a smaller one (keys are int32, so no
    two lie 2^32 apart): the largest step is the next pick, `pick + step`. One subtraction and one unsigned max per
    score (sm_90 fuses them) do the work of a compare, a select and a max, and the next pick is one addition to
    the reduced value: the selection is bound by issuing integer instructions (bench/README.md)."""
    return max_along((keys - pick[:, None]).to(tl.uint32, bitcast=True), 1)


@triton.jit
def _next_pick(keys, pick, picks, nearest, cols, r):
    """One selection round: the largest key under `pick` becomes pick `r` (column r of `picks`); `nearest` keeps
    the largest step so far, i.e. the smallest gap between consecutive picks (a gap g is the step 2^32 - g)."""
    step = _step_below(keys, pick)
    pick = pick + step.to(tl.int32, bitcast=True)
    return pick, tl.where(cols[None, :] == r, pick[:, None], picks), tl.maximum(nearest, step)


@triton.jit
def _group_mask(s, lanes, lane_ok, group_size, n_group, topk_group):
    """`s` with every expert outside the topk_group best groups set to -inf (DeepSeek-V3 noaux_tc).

    A group scores the sum of its two best scores (its one score when it has one expert); among equal
    group scores the lower group wins, as in the reference.
    """
    group = lanes // group_size
    gscore = tl.full(s.shape, 0.0, tl.float32)
    for g in range(n_group):
        member = lane_ok & (group == g)
        v = tl.where(member[None, :], s, float("-inf"))
        top1 = max_along(v, 1)
        first = min_along(tl.where(v == top1[:, None], lanes[None, :], 2**30), 1)
        top2 = max_along(tl.where(lanes[None, :] == first[:, None], float("-inf"), v), 1)
        score = tl.where(group_size > 1, top1 + top2, top1)
        gscore = tl.where((group == g)[None, :], score[:, None], gscore)
    free = tl.broadcast_to(lane_ok[None, :], s.shape)
    keep = tl.full(s.shape, 0, tl.int1)
    for _ in range(topk_group):
        best = max_along(tl.where(free, gscore, float("-inf")), 1)
        chosen = min_along(tl.where(free & (gscore == best[:, None]), group[None, :], 2**30), 1)
        hit = group[None, :] == chosen[:, None]
        keep = keep | (hit & free)
        free = free & ~hit
    return tl.where(keep, s, float("-inf"))


@triton.jit
def _selection_scores(logits, bias_ptr, lanes, lane_ok, group_size, n_group, topk_group, VARIANT: tl.constexpr):
    """The float32 score each variant selects on. Softmax is monotone, so softmax_topk selects on the logits
    themselves; the bias steers selection only. (Triton has no `in`, hence the two comparisons.)"""
    if VARIANT == "sigmoid_bias" or VARIANT == "grouped":  # noqa: SIM109
        bias = tl.load(bias_ptr + lanes, mask=lane_ok, other=0.0)
        s = sigmoid(logits) + bias[None, :]
        if VARIANT == "grouped":
            s = _group_mask(s, lanes, lane_ok, group_size, n_group, topk_group)
    else:
        s = logits
    return s


@triton.jit
def _load_tile(logits_ptr, tile, T, E, stride_t, stride_e,
               FULL_E: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    """The logits of tokens [tile·BLOCK_T, +BLOCK_T) in their own dtype; padded lanes read -inf.
    Rows past T repeat the last token (never stored), so the last tile needs no row mask."""
    rows = tl.minimum(tile * BLOCK_T + tl.arange(0, BLOCK_T), T - 1).to(tl.int64)
    lanes = tl.arange(0, BLOCK_E)
    ptrs = logits_ptr + rows[:, None] * stride_t + lanes[None, :] * stride_e
    return tl.load(ptrs) if FULL_E else tl.load(ptrs, mask=(lanes < E)[None, :], other=float("-inf"))


@triton.jit
def _route_tile(
    logits, tile, logits_ptr, bias_ptr, scale_ptr, w_ptr, ids_ptr,
    T, E, K, stride_t, stride_e, scaling_factor, group_size, n_group, topk_group,
    FULL_E: tl.constexpr, VARIANT: tl.constexpr, RENORM: tl.constexpr, KEYS_EXACT: tl.constexpr, BUG: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Route one tile whose logits are loaded: select, weight, store."""
    rows = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    lanes = tl.arange(0, BLOCK_E)
    cols = tl.arange(0, BLOCK_K)
    row_ok = rows < T
    lane_ok = lanes < E
    row_base = logits_ptr + tl.minimum(rows, T - 1).to(tl.int64) * stride_t
    logits = logits.to(tl.float32)

    keys = _packed_keys(_selection_scores(logits, bias_ptr, lanes, lane_ok, group_size, n_group, topk_group, VARIANT),
                        lanes, lane_ok, FULL_E, BLOCK_E)
    # Each round picks the largest key under the last pick (a row's keys are unique). Up to a K bucket of 8
    # (released models' top-k) the rounds are unrolled (each round's column is then known when compiling) and run
    # up to K; above it they loop: 64 unrolled rounds took 10-13 s to compile for sm_90, and the tests draw K up to E.
    pick = max_along(keys, 1)
    picks = tl.where(cols[None, :] == 0, pick[:, None], 0)
    nearest = tl.full([BLOCK_T], 0, tl.uint32)  # the largest step between consecutive picks
    if BLOCK_K <= 8:
        for r in tl.static_range(1, BLOCK_K):
            if r < K:
                pick, picks, nearest = _next_pick(keys, pick, picks, nearest, cols, r)
    else:
        for r in range(1, K):
            pick, picks, nearest = _next_pick(keys, pick, picks, nearest, cols, r)
    ids = (BLOCK_E - 1) - (picks & (BLOCK_E - 1))
    if not KEYS_EXACT:
        # The packing can misorder only scores it merged, whose keys then lie under BLOCK_E apart (a step above
        # 2^32 - BLOCK_E): two picks, or the K-th pick and the best unpicked key (when K == E none is left: the
        # step then wraps to a key above, millions away). Such a program's rows are redone exactly (about 2% of
        # programs on random fp32 scores at E = 128; always on exact ties, which is harmless).
        nearest = tl.maximum(nearest, _step_below(keys, pick))
        if max_along((nearest > 2**32 - BLOCK_E).to(tl.int32), 0) > 0:
            # The scores again from the tile (in cache): keeping them live through the rounds would cost
            # registers, and so occupancy, in every program for the few that come here.
            again = _load_tile(logits_ptr, tile, T, E, stride_t, stride_e, FULL_E, BLOCK_T, BLOCK_E).to(tl.float32)
            s = _selection_scores(again, bias_ptr, lanes, lane_ok, group_size, n_group, topk_group, VARIANT)
            ids = _exact_top_k(s, lanes, lane_ok, cols, K, BLOCK_T, BLOCK_K)

    # Weights from the exact logits of the picked experts (re-read; the tile is in cache).
    col_ok = tl.broadcast_to((cols < K)[None, :], [BLOCK_T, BLOCK_K])
    picked = tl.load(row_base[:, None] + ids * stride_e, mask=col_ok, other=float("-inf")).to(tl.float32)
    if VARIANT == "softmax_topk":
        top = max_along(picked, 1)[:, None]  # the first pick: the row's max logit
        e = tl.exp(picked - top)
        if RENORM and BUG != "skip_renorm":
            # softmax then renorm over the K == softmax over the K picked logits.
            w = e / sum_along(e, 1)[:, None]
        else:
            w = e / sum_along(tl.exp(logits - top), 1)[:, None]
    elif VARIANT == "gemma4" or VARIANT == "topk_softmax":  # noqa: SIM109 - softmax over the K picked
        e = tl.exp(picked - max_along(picked, 1)[:, None])
        w = e / sum_along(e, 1)[:, None]
        if VARIANT == "gemma4":  # scaled after the softmax
            w = w * tl.load(scale_ptr + ids, mask=col_ok, other=0.0)
    elif VARIANT == "sigmoid_topk_on_logits":
        # Sigmoid weights in float64, as the reference's: a float32 sigmoid underflows to 0 below about -104, and
        # renormalising a token whose picks all lie there divides 0 by 0 (fp16 logits reach -65504).
        w = tl.where(col_ok, sigmoid(picked.to(tl.float64)), 0.0)
        if RENORM and BUG != "skip_renorm":
            w = w / sum_along(w, 1)[:, None]
    else:  # sigmoid_bias, grouped
        w = sigmoid(picked.to(tl.float64))
        if BUG == "weights_from_biased_score":
            w = w + tl.load(bias_ptr + ids, mask=col_ok, other=0.0)
        w = tl.where(col_ok, w, 0.0)
        if RENORM and BUG != "skip_renorm":
            w = w / sum_along(w, 1)[:, None]
        w = w * scaling_factor
    out = rows.to(tl.int64)[:, None] * K + cols[None, :]
    tl.store(w_ptr + out, w.to(tl.float32), mask=row_ok[:, None] & col_ok)
    tl.store(ids_ptr + out, ids, mask=row_ok[:, None] & col_ok)


# Sizes Triton would otherwise specialise on (a value of 1, a multiple of 16): each would multiply the kernels a
# run compiles (a nightly routing-parity case drew 672 for DeepSeek-V3's 1000 examples, about 175 without), and none
# of them addresses memory, so knowing them when compiling saves nothing.
RUN_TIME_SIZES = ("T", "K", "group_size", "n_group", "topk_group")


@triton.jit(do_not_specialize=RUN_TIME_SIZES)
def _route_kernel(
    logits_ptr, bias_ptr, scale_ptr, w_ptr, ids_ptr,
    T, E, K, stride_t, stride_e, scaling_factor, group_size, n_group, topk_group,
    FULL_E: tl.constexpr, VARIANT: tl.constexpr, RENORM: tl.constexpr, KEYS_EXACT: tl.constexpr, BUG: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tile = tl.program_id(0)
    logits = _load_tile(logits_ptr, tile, T, E, stride_t, stride_e, FULL_E, BLOCK_T, BLOCK_E)
    _route_tile(logits, tile, logits_ptr, bias_ptr, scale_ptr, w_ptr, ids_ptr, T, E, K, stride_t, stride_e,
                scaling_factor, group_size, n_group, topk_group, FULL_E, VARIANT, RENORM, KEYS_EXACT, BUG,
                BLOCK_T, BLOCK_E, BLOCK_K)


def _vector(name: str, value: torch.Tensor | None, num_experts: int, logits: torch.Tensor) -> torch.Tensor:
    """`value` as a contiguous float32 [E] on the logits' device, or RoutingInputError."""
    if value is None:
        raise RoutingInputError(f"this routing needs {name} [num_experts]")
    if value.dim() != 1 or value.shape[0] != num_experts or not value.is_floating_point():
        raise RoutingInputError(f"{name} must be a float vector [num_experts={num_experts}], "
                                f"got {value.dtype} of shape {tuple(value.shape)}")
    if value.dtype == torch.float32 and value.device == logits.device and value.is_contiguous():
        return value  # the common case, without `to`'s cost on the launch path
    return value.to(logits.device, torch.float32).contiguous()


def _validate(logits: torch.Tensor, knobs: RoutingKnobs) -> None:
    validate_routing_inputs(logits, knobs)
    if logits.dtype not in SUPPORTED_DTYPES:
        raise RoutingInputError(f"logits dtype {logits.dtype} is not one of {SUPPORTED_DTYPES}")
    if knobs.variant not in KERNEL_VARIANTS:
        raise RoutingInputError(f"the kernel has no code for variant {knobs.variant!r}; "
                                f"it routes {', '.join(KERNEL_VARIANTS)}")
    if knobs.variant == "grouped" and knobs.group_score != "top2_sum":
        raise RoutingInputError(f"the kernel scores groups by their top-2 sum only, not {knobs.group_score!r}")
    if knobs.variant == "grouped":
        assert knobs.n_group is not None  # validate_routing_inputs checked it
        per_group = logits.shape[-1] // knobs.n_group
        if knobs.topk_group is None or not 0 < knobs.topk_group <= knobs.n_group:
            raise RoutingInputError(f"topk_group={knobs.topk_group} must lie in 1..n_group={knobs.n_group}")
        if knobs.top_k > knobs.topk_group * per_group:
            raise RoutingInputError(f"top_k={knobs.top_k} exceeds the {knobs.topk_group * per_group} experts "
                                    f"of the kept groups")
    try:
        check_device(logits)
    except ValueError as exc:
        raise RoutingInputError(str(exc)) from exc


@dataclass(frozen=True)
class RouteLaunch:
    """How a routing launch is laid out: tokens per program, warps per program and, where set, the registers
    a thread may use (ptxas's maxnreg)."""

    block_t: int
    num_warps: int
    max_registers: int | None = None


# Registers per thread of a capped launch (register_cap): 32 one-warp programs then fit an SM, its limit.
MAX_REGISTERS = 64


def register_cap(element_size: int, num_warps: int, variant_name: str) -> int | None:
    """The register cap of a launch, None where none: one-warp launches of 32-bit logits, but for grouped routing.

    Measured on an H200 at T = 2^20 (bench/README.md): ptxas gives the E = 128 fp32 kernels 78-94 registers, so
    24 one-warp programs fit an SM; capped at 64, 32 fit and gemma4, softmax_topk, sigmoid_bias and
    sigmoid_topk_on_logits ran 3-9% faster (sigmoid_bias despite 16 bytes of spills). Grouped routing ran 9%
    slower capped (108 registers uncapped), and the cap slowed or did not move the 16-bit and two-warp launches.
    """
    if element_size == 4 and num_warps == 1 and variant_name != "grouped":
        return MAX_REGISTERS
    return None


# Programs a small T is spread over at least (where one token per program allows): at T = 16,384 on an
# H200, 2 tokens per program ran the kernel in 12 µs, 8 in 20 (bench/README.md).
SMALL_T_PROGRAMS = 8192


@functools.lru_cache(maxsize=1024)  # called on every launch: the small-T launches are few
def default_launch(experts: int, element_size: int, tokens: int, variant_name: str) -> RouteLaunch:
    """The launch for T tokens of E experts of `element_size`-byte logits routed by `variant_name`, from the sweeps
    in bench/README.md.

    With 16-byte loads one warp covers 32·16/element_size lanes of a row; a row that fills it gets one
    warp per program (wider rows would be spread over warps, and every selection round would reduce
    through shared memory), a narrower one two. About 16 scores per thread measured best at large T on
    an H200 (4 tokens per program at E = 128, 2 at E = 256): the selection is bound by issuing integer
    instructions, and fewer registers per thread (register_cap) keep more warps resident to issue them. A
    small T takes fewer tokens per program, so that at least SMALL_T_PROGRAMS programs spread it over the
    GPU (one of 1, 2, 4, ...: a bounded set of compiled launches). A persistent grid prefetching its next
    tile, also tried, ran 5-15% slower.
    """
    block_e = max(16, triton.next_power_of_2(experts))
    if INTERPRETED:
        # The interpreter runs a program as numpy calls: few, large programs are fastest.
        return RouteLaunch(64, 4)
    warps = 1 if block_e >= 32 * 16 // element_size else 2
    block_t = max(1, 512 // block_e)
    while block_t > 1 and tokens < block_t * SMALL_T_PROGRAMS:
        block_t //= 2
    return RouteLaunch(block_t, warps, register_cap(element_size, warps, variant_name))


def group_arguments(experts: int, knobs: RoutingKnobs) -> tuple[int, int, int]:
    """The kernel's (group_size, n_group, topk_group) arguments; placeholders of 1 where the variant reads none."""
    if knobs.variant == "grouped" and knobs.n_group:
        return experts // knobs.n_group, knobs.n_group, knobs.topk_group or 1
    return 1, knobs.n_group or 1, knobs.topk_group or 1


def kernel_constexprs(experts: int, element_size: int, knobs: RoutingKnobs, launch: RouteLaunch,
                      bug: str = "") -> dict[str, object]:
    """The compile-time arguments of a routing launch: with the logits' dtype, the warps and Triton's specialisation
    of the integer arguments not in RUN_TIME_SIZES, they select the compiled kernel."""
    block_e = max(16, triton.next_power_of_2(experts))
    needs_bias = knobs.variant in ("sigmoid_bias", "grouped")
    return dict(
        FULL_E=experts == block_e, VARIANT=knobs.variant,
        # A variant that never renormalises ignores the knob: one kernel for both of its values.
        RENORM=bool(knobs.renormalize) and variant(knobs.variant).renormalizes,
        # Scores that are 16-bit logits have their low 13 mantissa bits zero: packing loses nothing.
        KEYS_EXACT=element_size == 2 and not needs_bias and block_e <= 2**13, BUG=bug,
        BLOCK_T=launch.block_t, BLOCK_E=block_e, BLOCK_K=max(2, triton.next_power_of_2(knobs.top_k)),
    )


def launch_route(
    logits: torch.Tensor,
    knobs: RoutingKnobs,
    *,
    bias: torch.Tensor | None = None,
    per_expert_scale: torch.Tensor | None = None,
    launch: RouteLaunch | None = None,
    bug: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """`route` with its launch layout exposed, for tuning and the benchmark."""
    _validate(logits, knobs)
    if bug and bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; known: {', '.join(BUGS)}")
    tokens, experts = logits.shape
    k = knobs.top_k
    needs_bias = knobs.variant in ("sigmoid_bias", "grouped")
    if needs_bias and bias is None:
        bias = torch.zeros(experts)  # as the reference: no bias means a zero bias
    bias_f = _vector("bias", bias, experts, logits) if needs_bias else None
    scale_f = _vector("per_expert_scale", per_expert_scale, experts, logits) if knobs.variant == "gemma4" else None
    weights = torch.empty(tokens, k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(tokens, k, dtype=torch.int32, device=logits.device)
    if tokens == 0:
        return weights, ids
    launch = launch or default_launch(experts, logits.element_size(), tokens, knobs.variant)
    dummy = weights  # an unused pointer argument still needs a tensor
    with launch_context():
        _route_kernel[(triton.cdiv(tokens, launch.block_t),)](
            logits, bias_f if bias_f is not None else dummy, scale_f if scale_f is not None else dummy,
            weights, ids,
            tokens, experts, k, logits.stride(0), logits.stride(1), float(knobs.scaling_factor),
            *group_arguments(experts, knobs),
            **kernel_constexprs(experts, logits.element_size(), knobs, launch, bug), num_warps=launch.num_warps,
            **({"maxnreg": launch.max_registers} if launch.max_registers else {}),
        )
    return weights, ids


def route(
    logits: torch.Tensor,
    knobs: RoutingKnobs,
    *,
    bias: torch.Tensor | None = None,
    per_expert_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Route logits [T, E] with `knobs`: (weights float32 [T, K], ids int32 [T, K]); see the module doc."""
    return launch_route(logits, knobs, bias=bias, per_expert_scale=per_expert_scale)


def route_with_bug(bug: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """A `route` whose kernel has the deliberate bug `bug` (one of BUGS), for tests of the checks."""
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; known: {', '.join(BUGS)}")

    def broken(logits: torch.Tensor, knobs: RoutingKnobs, *, bias: torch.Tensor | None = None,
               per_expert_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return launch_route(logits, knobs, bias=bias, per_expert_scale=per_expert_scale, bug=bug)

    return broken
