"""Sizes drawn with weight on the values that break code and the values real models use.

A uniform draw over 1..64 experts gives Mixtral's top-2, a top-K equal to E or a single decode token only now
and then; these strategies give about half their draws to the bounds and to released models' values, the rest
uniform over the range, and shrink toward the lower bound. The weighting is in the pool sampled from, not in
the order Hypothesis tries choices, so it holds under any seed (`bench/coverage.py` measures it).
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import strategies as st

# Routed-expert counts of released MoE checkpoints (Mixtral 8, OLMoE 64, Qwen1.5-MoE 60, Qwen3-MoE 128,
# DeepSeek-V2 160, DeepSeek-V3 256, Kimi-K2 384, ...).
REAL_EXPERT_COUNTS = (8, 16, 32, 60, 64, 128, 160, 256, 384)
# Experts per token of released models (Switch and Llama 4 1, Mixtral 2, Qwen2-MoE 4, DeepSeek-V2 6,
# Qwen3-MoE and DeepSeek-V3 8).
REAL_TOP_KS = (1, 2, 4, 6, 8)


def sizes(low: int, high: int, favoured: Iterable[int] = ()) -> st.SearchStrategy[int]:
    """An int in low..high: about half the draws are `low`, `high` or a `favoured` value in range (each bound
    twice as often as a favoured value), the rest uniform over the range. Shrinks toward `low`."""
    span = list(range(low, high + 1))
    special = [v for v in sorted({*favoured} - {low, high}) if low < v < high] + [low, high] * 2
    # Each special value repeated so the specials fill about as much of the pool as the whole range does.
    return st.sampled_from(sorted(span + special * max(1, len(span) // len(special))))
