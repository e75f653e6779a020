"""Hidden sizes and the alignments kernels pad them to (NOTES §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ALIGNMENTS = ("none", 64, 128, 256, "512B")


@dataclass(frozen=True)
class PaddedDim:
    hidden: int
    alignment: str | int
    dtype: torch.dtype

    @property
    def elements(self) -> int:
        """The alignment in elements (512 bytes is 128 fp32 or 256 fp16/bf16 elements); 1 for none."""
        if self.alignment == "none":
            return 1
        if self.alignment == "512B":
            return 512 // torch.empty((), dtype=self.dtype).element_size()
        return int(self.alignment)


def padded_dims(max_hidden: int = 8192) -> st.SearchStrategy[PaddedDim]:
    """Hidden 1..max_hidden with an alignment and dtype; shrinks toward hidden=1, no alignment, float32.

    A quarter of draws sit just above a multiple of 64, where padding is largest."""
    hidden = st.one_of(
        st.integers(1, max_hidden),
        st.integers(1, max_hidden // 64 - 1).map(lambda m: 64 * m + 1),
    )
    return st.builds(PaddedDim, hidden=hidden, alignment=st.sampled_from(ALIGNMENTS), dtype=st.sampled_from(DTYPES))


@dataclass(frozen=True)
class PaddingExample:
    """A padded hidden size and the input: `tokens` hidden states, block and input built from `seed`."""

    dim: PaddedDim
    tokens: int
    seed: int


def padding_examples() -> st.SearchStrategy[PaddingExample]:
    """A `padded_dims()` dim, 1..8 tokens, a seed in 0..2**16. Shrinks toward hidden=1 with no alignment in
    float32, one token, seed 0."""
    return st.builds(PaddingExample, dim=padded_dims(), tokens=st.integers(1, 8), seed=st.integers(0, 2**16))
