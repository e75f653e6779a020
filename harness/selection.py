"""Which cases a run holds: targets × checks × families, with names validated against what exists.

Guarantees: an unknown target, check or family name raises UsageError listing the valid ones; a
target that cannot load here is not a usage error but a `Missing` entry saying why, so the rest of
the run goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from harness.checks import CHECKS
from harness.checks.base import Check
from harness.exit_codes import UsageError
from harness.families import DEFAULT_FAMILIES, Family, get_family
from harness.pseudo_families import ANY_FAMILY, SYNTHETIC
from harness.targets import DEFAULT_TARGETS, TargetLoadError, TargetUnavailable, UnknownTarget, load_target
from harness.targets.base import Target
from harness.tiny_configs import discover_moe_families


@dataclass(frozen=True)
class Case:
    check: Check
    target: Target
    family: Family
    spec: str = ""  # how the target was named: a registered name or package.module:object

    @property
    def id(self) -> str:
        return f"{self.target.name}-{self.family.name}"


@dataclass(frozen=True)
class Missing:
    """A target that could not load: `error` is False when a dependency is merely not installed here;
    `environment` when the fault is its environment's (not built, failed to build, or lacks what it declares)."""

    spec: str
    reason: str
    error: bool
    environment: bool = False


@dataclass
class Plan:
    cases: list[Case] = field(default_factory=list)
    targets: list[tuple[str, Target]] = field(default_factory=list)  # (spec, target) in command-line order
    missing: list[Missing] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    # (spec, check) pairs left out because the target provides no capability for the check (only when the
    # checks were not named: a check named on the command line gets its not-applicable case)
    not_offered: list[tuple[str, str]] = field(default_factory=list)
    # Families named that this process's transformers does not have, in a run started by another harness process
    # that validated them against its own (an environment's transformers can be older): each a not-applicable skip.
    absent: list[str] = field(default_factory=list)


def _validate(kind: str, kinds: str, names: Iterable[str], valid: Iterable[str]) -> None:
    valid = list(valid)
    bad = [n for n in names if n not in valid]
    if bad:
        raise UsageError(f"unknown {kind} {', '.join(map(repr, bad))}; valid {kinds}: {', '.join(valid)}")


def try_load(spec: str) -> Target | Missing:
    """The target `spec` names, or why it cannot load here; a wrong name or spec raises UsageError."""
    try:
        return load_target(spec)
    except UnknownTarget as exc:
        raise UsageError(str(exc)) from exc
    except TargetUnavailable as exc:
        return Missing(spec, f"not available here: {exc}", error=False)
    except TargetLoadError as exc:
        return Missing(spec, str(exc), error=True)


def plan(
    targets: list[str] | None = None, checks: list[str] | None = None, families: list[str] | None = None,
    broad: bool = True, validated: bool = False,
) -> Plan:
    """Every case of the selection, in target, check, family order, and the targets that did not load. `broad`: a
    capability's own breadth (`runs_over`) applies; the bare main job runs without it, so that it stays a few
    minutes. `validated`: the families were validated by the process that started this one (a family unknown here
    is `absent`, not a usage error)."""
    check_names = checks or list(CHECKS)
    _validate("check", "checks", check_names, CHECKS)
    known = (*discover_moe_families(), SYNTHETIC, ANY_FAMILY)
    absent = [f for f in families or [] if f not in known] if validated else []
    if families:
        _validate("family", "families", [f for f in families if f not in absent], known)
    result = Plan(checks=check_names, absent=absent)
    for spec in dict.fromkeys(DEFAULT_TARGETS if targets is None else targets):
        loaded = try_load(spec)
        if isinstance(loaded, Missing):
            result.missing.append(loaded)
        else:
            result.targets.append((spec, loaded))
    for spec, target in result.targets:
        for name in check_names:
            check = CHECKS[name]
            if not checks and getattr(target, check.capability) is None:
                result.not_offered.append((spec, name))
                continue
            breadth = getattr(getattr(target, check.capability), "runs_over", None) if broad else None
            wanted = check.families or breadth or target.families or tuple(DEFAULT_FAMILIES)
            wanted += tuple(f for f in check.extra_families if f not in wanted)
            for family in wanted:
                if families and family not in families and ANY_FAMILY not in wanted:
                    continue
                result.cases.append(Case(check, target, get_family(family), spec))
    if result.targets and not result.cases and not result.not_offered and not result.absent:
        runs_over = {n: CHECKS[n].families or tuple(DEFAULT_FAMILIES) for n in check_names}
        raise UsageError("no case matches: " + "; ".join(f"{n} runs over {', '.join(f)}" for n, f in runs_over.items()))
    return result


def select_cases(
    targets: list[str] | None = None, checks: list[str] | None = None, families: list[str] | None = None
) -> Iterator[Case]:
    """The cases of `plan(...)`; targets that cannot load here are left out."""
    yield from plan(targets, checks, families).cases
