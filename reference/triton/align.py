"""The fused MoE's alignment in Triton: the (token, pick) pairs grouped by expert, in one or two launches.

`align_pairs(ids, E, block_m)` returns the rows the expert kernels read (each expert's pairs in their
flat order, its run padded to a multiple of block_m, padding rows holding the pair count P) and the
expert of each block of block_m rows (-1 past the last). Nothing waits on the device: the number of
blocks is the host-side bound min(P, (P + E·(block_m - 1)) // block_m).

How: the pairs are split into at most MAX_CHUNKS chunks. `_count_kernel` counts each chunk's pairs per
expert; `_place_kernel` (one program per chunk) sums those counts into each expert's padded start and
the pairs of the same expert in earlier chunks, then writes each pair's row, and writes its share of
the block experts and padding rows. A single chunk (decode sizes) counts in place: one launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from reference.triton import launch_context
from reference.triton.core_ops import sum_along

# Enough chunks to spread a prefill's pairs over the GPU, few enough that each program's pass over
# every chunk's counts (MAX_CHUNKS × E integers, from L2) stays cheap.
MAX_CHUNKS = 128
# Elements of the [pairs, experts] comparison tiles a program holds at once.
TILE_ELEMENTS = 8192


@triton.jit
def _cumsum(x):
    return tl.associative_scan(x, 0, tl.standard._sum_combine)


@triton.jit
def _chunk_counts(ids_ptr, lo, hi, BLOCK_E: tl.constexpr, SUB: tl.constexpr):
    """Pairs per expert among flat pairs [lo, hi), [BLOCK_E] int32."""
    lanes = tl.arange(0, BLOCK_E)
    counts = tl.full([BLOCK_E], 0, tl.int32)
    for start in range(lo, hi, SUB):
        idx = start + tl.arange(0, SUB)
        expert = tl.load(ids_ptr + idx, mask=idx < hi, other=-1).to(tl.int32)
        counts += sum_along((expert[:, None] == lanes[None, :]).to(tl.int32), 0)
    return counts


@triton.jit
def _count_kernel(ids_ptr, counts_ptr, P, CHUNK, BLOCK_E: tl.constexpr, SUB: tl.constexpr):
    chunk = tl.program_id(0)
    lo = chunk * CHUNK
    counts = _chunk_counts(ids_ptr, lo, tl.minimum(lo + CHUNK, P), BLOCK_E, SUB)
    tl.store(counts_ptr + chunk * BLOCK_E + tl.arange(0, BLOCK_E), counts)


@triton.jit
def _place_kernel(
    ids_ptr, counts_ptr, rows_ptr, block_expert_ptr,
    P, E, CHUNK, NUM_CHUNKS, NUM_BLOCKS, BLOCKS_PER_PROGRAM,
    SINGLE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, SUB: tl.constexpr,
):
    chunk = tl.program_id(0)
    lanes = tl.arange(0, BLOCK_E)
    if SINGLE:  # one chunk: count here, no earlier chunks
        total = _chunk_counts(ids_ptr, 0, P, BLOCK_E, SUB)
        earlier = tl.full([BLOCK_E], 0, tl.int32)
    else:
        total = tl.full([BLOCK_E], 0, tl.int32)
        earlier = tl.full([BLOCK_E], 0, tl.int32)
        for c0 in range(0, NUM_CHUNKS, SUB):
            cs = c0 + tl.arange(0, SUB)
            tile = tl.load(counts_ptr + cs[:, None] * BLOCK_E + lanes[None, :], mask=(cs < NUM_CHUNKS)[:, None], other=0)
            total += sum_along(tile, 0)
            earlier += sum_along(tl.where((cs < chunk)[:, None], tile, 0), 0)
    blocks = (total + BLOCK_M - 1) // BLOCK_M
    block_end = _cumsum(blocks)
    padded_start = (block_end - blocks) * BLOCK_M

    # This chunk's pairs: row = the expert's padded start + its pairs in earlier chunks + those before
    # it in this chunk (the flat order kept).
    lo = chunk * CHUNK
    hi = tl.minimum(lo + CHUNK, P)
    base = padded_start + earlier
    j = tl.arange(0, SUB)
    for start in range(lo, hi, SUB):
        idx = start + j
        ok = idx < hi
        expert = tl.load(ids_ptr + idx, mask=ok, other=-1).to(tl.int32)
        onehot = (expert[:, None] == lanes[None, :]).to(tl.int32)
        before = sum_along(((expert[:, None] == expert[None, :]) & (j[None, :] < j[:, None])).to(tl.int32), 1)
        row = sum_along(onehot * base[None, :], 1) + before
        tl.store(rows_ptr + row, idx, mask=ok)
        base += sum_along(onehot, 0)

    # This program's share of the blocks: each block's expert (the first whose blocks end after it,
    # -1 past the last) and the padding rows past its expert's pairs.
    first = chunk * BLOCKS_PER_PROGRAM
    last = tl.minimum(first + BLOCKS_PER_PROGRAM, NUM_BLOCKS)
    slot = tl.arange(0, BLOCK_M)
    for b0 in range(first, last, SUB):
        b = b0 + j
        b_ok = b < last
        owner = sum_along((block_end[None, :] <= b[:, None]).to(tl.int32), 1)
        real = owner < E
        tl.store(block_expert_ptr + b, tl.where(real, owner, -1), mask=b_ok)
        filled_end = sum_along(tl.where(lanes[None, :] == owner[:, None], (padded_start + total)[None, :], 0), 1)
        row = b[:, None] * BLOCK_M + slot[None, :]
        pad = (b_ok & real)[:, None] & (row >= filled_end[:, None])
        tl.store(rows_ptr + row, tl.full(row.shape, 0, tl.int32) + P, mask=pad)


def align_pairs(ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (token, pick) pairs of `ids` [T, K] grouped by expert, each expert's run padded to block_m rows.

    Returns (rows int32 [B·block_m]: the flat pair index t·K + k of each row, or T·K for padding;
    block_expert int32 [B]: the expert of each block, -1 past the last). B is an upper bound on the
    blocks needed, so nothing waits on the device. Within an expert, pairs keep their flat order.
    ids must lie in 0..E-1 (not checked: that would wait on the device).
    """
    flat = ids.reshape(-1)
    pairs = flat.numel()
    if pairs == 0:  # one block of padding, no expert: what the launches would give, without a grid of zero
        return (torch.zeros(block_m, dtype=torch.int32, device=ids.device),
                torch.full((1,), -1, dtype=torch.int32, device=ids.device))
    block_e = max(16, triton.next_power_of_2(num_experts))
    sub = max(16, min(64, TILE_ELEMENTS // block_e))
    chunks = min(MAX_CHUNKS, triton.cdiv(pairs, sub))
    chunk = triton.cdiv(triton.cdiv(pairs, chunks), sub) * sub
    chunks = triton.cdiv(pairs, chunk)
    bound = max(1, min(pairs, (pairs + num_experts * (block_m - 1)) // block_m))
    rows = torch.empty(bound * block_m, dtype=torch.int32, device=ids.device)
    block_expert = torch.empty(bound, dtype=torch.int32, device=ids.device)
    counts = torch.empty(chunks, block_e, dtype=torch.int32, device=ids.device)  # unused for one chunk
    with launch_context():
        if chunks > 1:
            _count_kernel[(chunks,)](flat, counts, pairs, chunk, BLOCK_E=block_e, SUB=sub)
        _place_kernel[(chunks,)](
            flat, counts, rows, block_expert, pairs, num_experts, chunk, chunks, bound, triton.cdiv(bound, chunks),
            SINGLE=chunks == 1, BLOCK_M=block_m, BLOCK_E=block_e, SUB=sub,
        )
    return rows, block_expert
