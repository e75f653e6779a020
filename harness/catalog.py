"""What the harness can run: its checks, and the families a run can cover (for `moe-harness checks` and
`moe-harness families`), each family with what the reference makes of it and, for a target, which of its
checks run there and why not."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.checks import CHECKS
from harness.checks.base import Check
from harness.families import DEFAULT_FAMILIES, get_family, tiny_spec
from harness.targets.base import Target
from harness.tiny_configs import discover_moe_families
from harness.verdict import skip_kind


@dataclass(frozen=True)
class CheckEntry:
    name: str
    capability: str
    runs_over: str
    summary: str


@dataclass
class FamilyEntry:
    """One family: its routing as the reference resolves it from the tiny config (or why it cannot), whether
    it is in the default set, and per asked check "runs" or the reason the check skips it."""

    name: str
    default: bool
    routing: str = ""
    experts: int | None = None
    top_k: int | None = None
    unresolved: str = ""
    checks: dict[str, str] = field(default_factory=dict)


def check_entries() -> list[CheckEntry]:
    """Every check: the capability it asks of a target, the families its cases run over, its property."""
    entries = []
    for check in CHECKS.values():
        if check.families:
            over = f"one case for all ({', '.join(check.families)})"
        else:
            over = "the target's (the default set when it declares none)"
        if check.extra_families:
            over += f", plus {', '.join(check.extra_families)}"
        entries.append(CheckEntry(check.name, check.capability, over, check.summary))
    return entries


def family_entries(target: Target | None = None, checks: list[Check] | None = None) -> list[FamilyEntry]:
    """The families a run covers: the target's (its declared ones, else the default set) or, with no target,
    every family the harness knows (the defaults and the installed transformers' MoE model types). With
    `checks`, whether each check runs on each family for `target`, or why not."""
    if target is not None:
        names = list(target.families or DEFAULT_FAMILIES)
    else:
        names = sorted(set(discover_moe_families()) | set(DEFAULT_FAMILIES))
    return [_entry(name, target, checks or []) for name in names]


def _entry(name: str, target: Target | None, checks: list[Check]) -> FamilyEntry:
    entry = FamilyEntry(name, name in DEFAULT_FAMILIES)
    try:
        spec = tiny_spec(name)
        entry.routing, entry.experts, entry.top_k = spec.routing.variant, spec.num_experts, spec.top_k
    except Exception as exc:  # noqa: BLE001 - the reference cannot resolve it: shown, with why
        entry.unresolved = f"{type(exc).__name__}: {exc}"
    if target is None:
        return entry
    # A check with fixed families ("any") has one case for all, not a verdict per family.
    for check in [c for c in checks if not c.families]:
        try:
            reason = check.skip_reason(target, get_family(name))
        except Exception as exc:  # noqa: BLE001 - preparing the case would raise the same: shown as such
            reason = f"raises while preparing: {type(exc).__name__}: {exc}"
        entry.checks[check.name] = ("runs" if reason is None
                                    else f"skips ({skip_kind(reason) or 'unclassified'}): {reason}")
    return entry
