"""config-spelling: a value set through any spelling the family's config accepts is the value its model uses.

An expert count and a top-k are drawn, each set through one accepted name (constructor keyword, stored
config.json key or attribute_map alias, at the family's nesting); every form the target offers
(constructor call, config.json read by the library, assignment on the built config) is built from them,
and the target reports what each built model uses. Every measurement must equal the value set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hypothesis
from hypothesis import strategies as st

from harness.checks.base import Check
from harness.families import Family
from harness.targets.base import Spelling, Target, ValuesRejected
from harness.verdict import PropertyViolation, TargetError

# Expert counts: even (a tiny config keeps two expert groups), never the tiny config's own 8, so a
# spelling that is ignored leaves a value that differs from the one set.
EXPERT_COUNTS = (4, 6, 10, 12)
MAX_TOP_K = 3


@dataclass(frozen=True)
class SpellingCase:
    """Each quantity's spelling and value (every form is built from them)."""

    num_experts: tuple[Spelling, int]
    top_k: tuple[Spelling, int]

    def settings(self) -> tuple[tuple[Spelling, int], ...]:
        return (self.num_experts, self.top_k)

    def describe(self) -> dict[str, Any]:
        return {"num_experts": self.num_experts[1], "num_experts_spelling": str(self.num_experts[0]),
                "top_k": self.top_k[1], "top_k_spelling": str(self.top_k[0])}


def _by_quantity(target: Target, family: Family) -> dict[str, list[Spelling]]:
    assert target.config_spelling is not None
    found: dict[str, list[Spelling]] = {"num_experts": [], "top_k": []}
    for spelling in target.config_spelling.spellings(family.name):
        found.setdefault(spelling.quantity, []).append(spelling)
    return found


@st.composite
def spelling_cases(draw: st.DrawFn, names: dict[str, list[Spelling]]) -> SpellingCase:
    """A spelling per quantity, an even expert count and a top-k of at most half of it (a tiny grouped
    config keeps one of two groups). Shrinks toward the first spelling, 4 experts and top-k 1."""
    experts = draw(st.sampled_from(EXPERT_COUNTS))
    top_k = draw(st.integers(1, min(MAX_TOP_K, experts // 2)))
    return SpellingCase((draw(st.sampled_from(names["num_experts"])), experts),
                        (draw(st.sampled_from(names["top_k"])), top_k))


def check_config_spelling(target: Target, family: Family, case: SpellingCase) -> None:
    assert target.config_spelling is not None
    for form in target.config_spelling.forms:
        try:
            seen = target.config_spelling.used(family.name, form, case.settings())
        except ValuesRejected:
            hypothesis.reject()  # the family's own keyword rejects these values too: no spelling to judge
        except Exception as exc:
            raise TargetError(f"building {family.name} ({form}) with {case.describe()} raised "
                              f"{type(exc).__name__}: {exc}", exc) from exc
        _assert_used(form, case, seen)


def _assert_used(form: str, case: SpellingCase, seen: dict[str, list[tuple[str, int]]]) -> None:
    for spelling, value in case.settings():
        observed = seen.get(spelling.quantity, [])
        if not observed:
            raise PropertyViolation(f"{spelling.quantity}={value} set through {spelling} ({form}): the built "
                                    f"model has no MoE block that uses a {spelling.quantity}", form=form,
                                    spelling=str(spelling))
        wrong = [(where, got) for where, got in observed if got != value]
        if wrong:
            where, got = wrong[0]
            raise PropertyViolation(
                f"{spelling.quantity}={value} set through {spelling} ({form}), but the built model uses "
                f"{got} ({where}; {len(wrong)} of {len(observed)} measurements differ)",
                form=form, spelling=str(spelling), set=value, used=got, where=where)


def _applies(target: Target, family: Family) -> str | None:
    missing = [q for q, names in _by_quantity(target, family).items() if not names]
    return f"its config accepts no {' or '.join(missing)} spelling" if missing else None


CONFIG_SPELLING = Check(
    name="config-spelling",
    capability="config_spelling",
    summary="an expert count / top-k set through any accepted spelling, nesting and form is what the model uses",
    strategy=lambda target, family: spelling_cases(_by_quantity(target, family)),
    prop=check_config_spelling,
    describe=lambda case: case.describe(),
    applies=_applies,
    example_caps=(("dev", 5), ("ci", 5)),
)
