"""Inputs to a whole MoE block: how many tokens, the seed that builds the block and its hidden states."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

INPUT_SCALES = (0.5, 1.0, 4.0)


@dataclass(frozen=True)
class BlockInput:
    """`tokens` hidden states drawn from `seed` (which also seeds the block's weights), times `scale`."""

    tokens: int
    seed: int
    scale: float

    def hidden_states(self, hidden_size: int) -> torch.Tensor:
        """x [tokens, hidden_size] in float32: standard normal from `seed`, times `scale`."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.tokens, hidden_size, generator=gen) * self.scale

    def describe(self) -> dict[str, object]:
        return {"tokens": self.tokens, "seed": self.seed, "input_scale": self.scale}


def block_inputs() -> st.SearchStrategy[BlockInput]:
    """1..16 tokens, a seed in 0..2**16, an input scale of INPUT_SCALES. Shrinks toward one token, seed 0,
    scale 0.5."""
    return st.builds(BlockInput, tokens=st.integers(1, 16), seed=st.integers(0, 2**16),
                     scale=st.sampled_from(INPUT_SCALES))


@dataclass(frozen=True)
class SubstitutionExample:
    """A block and its input built from `seed` with `tokens` tokens; the seed also draws each new value."""

    tokens: int
    seed: int


def substitution_examples() -> st.SearchStrategy[SubstitutionExample]:
    """4..16 tokens (enough that a changed pick shows in the output) and a seed in 0..2**16. Shrinks toward
    4 tokens, seed 0."""
    return st.builds(SubstitutionExample, tokens=st.integers(4, 16), seed=st.integers(0, 2**16))
