"""An expert count and a top-k, each set through one of the names a family's config accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.targets.base import Spelling

# Expert counts: even (a tiny config keeps two expert groups), never the tiny config's own 8, so a
# spelling that is ignored leaves a value that differs from the one set.
EXPERT_COUNTS = (4, 6, 10, 12)
MAX_TOP_K = 3
QUANTITIES = ("num_experts", "top_k")


@dataclass(frozen=True)
class SpellingExample:
    """Each quantity's spelling and value (every form is built from them)."""

    num_experts: tuple[Spelling, int]
    top_k: tuple[Spelling, int]

    def settings(self) -> tuple[tuple[Spelling, int], ...]:
        return (self.num_experts, self.top_k)

    def describe(self) -> dict[str, Any]:
        return {"num_experts": self.num_experts[1], "num_experts_spelling": str(self.num_experts[0]),
                "top_k": self.top_k[1], "top_k_spelling": str(self.top_k[0])}


def by_quantity(spellings: tuple[Spelling, ...]) -> dict[str, list[Spelling]]:
    """The spellings grouped by the quantity they set; every one of QUANTITIES is a key, maybe with none."""
    found: dict[str, list[Spelling]] = {quantity: [] for quantity in QUANTITIES}
    for spelling in spellings:
        found.setdefault(spelling.quantity, []).append(spelling)
    return found


@st.composite
def spelling_examples(draw: st.DrawFn, names: dict[str, list[Spelling]]) -> SpellingExample:
    """A spelling per quantity (of `names`, as `by_quantity` groups them), an even expert count of
    EXPERT_COUNTS and a top-k of at most half of it and at most MAX_TOP_K (a tiny grouped config keeps one
    of two groups). Shrinks toward the first spellings, 4 experts and top-k 1."""
    experts = draw(st.sampled_from(EXPERT_COUNTS))
    top_k = draw(st.integers(1, min(MAX_TOP_K, experts // 2)))
    return SpellingExample((draw(st.sampled_from(names["num_experts"])), experts),
                           (draw(st.sampled_from(names["top_k"])), top_k))
