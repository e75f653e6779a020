"""Which cases a run holds: targets × checks × families, with names validated against what exists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from harness.checks import CHECKS
from harness.checks.base import Check
from harness.families import DEFAULT_FAMILIES, Family, discover_moe_families, get_family
from harness.strategies.configs import SYNTHETIC
from harness.targets import BUILTIN, DEFAULT_TARGETS, load_target
from harness.targets.base import Target


class UsageError(ValueError):
    """A name that matches no target, check or family; the message lists the valid ones."""


@dataclass(frozen=True)
class Case:
    check: Check
    target: Target
    family: Family

    @property
    def id(self) -> str:
        return f"{self.target.name}-{self.family.name}"


def _validate(kind: str, names: Iterable[str], valid: Iterable[str]) -> None:
    valid = list(valid)
    bad = [n for n in names if n not in valid]
    if bad:
        raise UsageError(f"unknown {kind} {', '.join(map(repr, bad))}; valid {kind}s: {', '.join(valid)}")


def select_cases(
    targets: list[str] | None = None, checks: list[str] | None = None, families: list[str] | None = None
) -> Iterator[Case]:
    """Every case of the selection, in target, check, family order."""
    target_names = targets or list(DEFAULT_TARGETS)
    _validate("target", target_names, BUILTIN)
    check_names = checks or list(CHECKS)
    _validate("check", check_names, CHECKS)
    if families:
        _validate("family", families, (*discover_moe_families(), SYNTHETIC, "any"))
    loaded = [load_target(n) for n in target_names]
    for target in loaded:
        for name in check_names:
            check = CHECKS[name]
            wanted = check.families or tuple(DEFAULT_FAMILIES)
            for family in wanted:
                if families and family not in families and "any" not in wanted:
                    continue
                yield Case(check, target, get_family(family))
