"""How the engine classifies a case: pins run beside generation, skips carry their kind, the target's failures
before any example are failures, and the plan makes no case for a capability a target lacks.

The engine itself is under test here, so the checks are small ones written for it; the targets' capabilities
are plain functions with the defect each test needs.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import strategies as st

from harness import engine
from harness.checks.base import Check
from harness.families import Family
from harness.findings import Finding
from harness.selection import plan
from harness.targets.base import Target
from harness.verdict import (
    CheckSkipped,
    ErrorKind,
    PropertyViolation,
    SkipKind,
    Status,
    TargetError,
    harness_limit,
    not_applicable,
)

FAMILY = Family("mixtral")


def _below_50(cap: Any, family: Family, x: int) -> None:
    """The property: the capability maps x below 50 (the capability is a function of x)."""
    if cap(x) >= 50:
        raise PropertyViolation(f"f({x}) = {cap(x)} is not below 50", x=x)


def _check(**fields: Any) -> Check[Any]:
    base: dict[str, Any] = dict(name="toy-below-50", capability="capturer", summary="f(x) < 50",
                                draws=lambda cap, family: st.integers(0, 100), holds=_below_50,
                                describe=lambda x: {"x": x})
    return Check(**{**base, **fields})


def _target(fn: Any, **fields: Any) -> Target:
    return Target(name="toy", version="0", description="a function of x", capturer=fn, **fields)


class _Pin:
    def __init__(self, value: int) -> None:
        self.value = value

    def build(self) -> int:
        return self.value


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pins for the toy check, as a findings file's [failure.pin] would give them."""
    def set_pins(*values: int) -> None:
        monkeypatch.setattr(engine, "pins_for", lambda check, target, family: [_Pin(v) for v in values])
    return set_pins


def test_a_failing_pin_does_not_stop_generation(pinned: Any) -> None:
    pinned(-7)  # fails by a defect of its own (negative x)
    fn = lambda x: 99 if x < 0 else x  # noqa: E731 - and generation finds the other defect: x >= 50
    result = engine.execute(_check(), _target(fn), FAMILY, profile="dev", seed=1)
    assert result.verdict.status == Status.FAIL
    assert result.verdict.counterexample["x"] == 50, "the generated (shrunk) counterexample is reported first"
    assert result.stats["pins"] == {"run": 1, "failed": 1}


def test_a_failing_pin_fails_the_case_when_generation_finds_nothing(pinned: Any) -> None:
    pinned(-7)
    result = engine.execute(_check(), _target(lambda x: 99 if x < 0 else 0), FAMILY, profile="dev", seed=1)
    assert result.verdict.status == Status.FAIL and result.verdict.counterexample["x"] == -7


def test_skips_carry_their_kind(pinned: Any) -> None:
    pinned()
    limit = engine.execute(_check(excludes=lambda cap, family, name: harness_limit("not modelled")),
                           _target(abs), FAMILY, profile="dev")
    assert (limit.verdict.status, limit.verdict.skip_kind) == (Status.SKIP, SkipKind.HARNESS_LIMIT)

    def raises_mid_example(x: int) -> int:
        raise CheckSkipped(not_applicable("no such capability for this family"))

    midway = engine.execute(_check(), _target(raises_mid_example), FAMILY, profile="dev")
    assert (midway.verdict.status, midway.verdict.skip_kind) == (Status.SKIP, SkipKind.NOT_APPLICABLE)
    missing = engine.execute(_check(capability="routing"), _target(abs), FAMILY, profile="dev")
    assert (missing.verdict.status, missing.verdict.skip_kind) == (Status.SKIP, SkipKind.NOT_APPLICABLE)


def test_the_targets_failure_while_a_case_is_set_up_is_a_failure_with_a_signature(pinned: Any) -> None:
    """A capability raising before any example (its model does not build) is the target's failure, and a
    known-failure entry for every check matches it by its message."""
    pinned()

    def draws(cap: Any, family: Family) -> st.SearchStrategy[int]:
        raise TargetError("building toy's model raised AttributeError: no rope_theta", AttributeError())

    check = _check(draws=draws)
    result = engine.execute(check, _target(abs), FAMILY, profile="dev")
    assert (result.verdict.status, result.verdict.kind) == (Status.FAIL, ErrorKind.TARGET_ERROR)
    entry = Finding(check="*", family="mixtral", reason="no rope_theta", signature="no rope_theta", reproducer="x")
    known = engine.execute(check, _target(abs, known_failures=[entry]), FAMILY, profile="dev")
    assert known.verdict.status == Status.KNOWN
    passing = engine.execute(_check(), _target(lambda x: 0, known_failures=[entry]), FAMILY, profile="dev")
    assert passing.verdict.status == Status.PASS and not passing.stale, "an every-check entry is never stale"


def test_an_every_family_entry_is_known_where_it_fails_and_never_stale_where_a_case_passes() -> None:
    """A defect of one shared function (a router every family calls) shows where the draws reach it: a family whose
    case passes says nothing about the entry (its reproducer does)."""
    entry = Finding(check="toy-below-50", family="*", reason="big x", signature="x=", reproducer="x")
    failing = engine.execute(_check(), _target(abs, known_failures=[entry]), FAMILY, profile="dev")
    assert failing.verdict.status == Status.KNOWN
    passing = engine.execute(_check(), _target(lambda x: 0, known_failures=[entry]), FAMILY, profile="dev")
    assert passing.verdict.status == Status.PASS and not passing.stale


def test_a_finding_shown_by_another_check_matches_there_too() -> None:
    entry = Finding(check="config-spelling", family="phimoe", also=("capturer-shape",), reason="top-2 fixed",
                    signature="used=2", reproducer="x")
    assert entry.covers("capturer-shape", "phimoe") and entry.covers("config-spelling", "phimoe")
    assert not entry.covers("block-parity", "phimoe")


def test_skip_reasons_survive_pickling_with_their_kind() -> None:
    """Worker processes send verdicts back pickled; a reason that lost its kind (or failed to unpickle) there
    broke the whole pool."""
    reason = pickle.loads(pickle.dumps(harness_limit("x")))
    assert reason == "x" and reason.kind == SkipKind.HARNESS_LIMIT


def test_the_plan_makes_no_case_for_a_capability_the_target_lacks() -> None:
    selection = plan(["seeds-fixed"])
    assert all(getattr(c.target, c.check.capability) is not None for c in selection.cases)
    assert ("seeds-fixed", "config-spelling") in selection.not_offered
    named = plan(["seeds-fixed"], ["config-spelling"])
    assert named.cases and not named.not_offered, "a check named on the command line gets its case (a skip)"


def test_a_known_failure_every_example_meets_does_not_hide_a_new_one(pinned: Any) -> None:
    """Half the inputs trip a recorded defect (odd x); generation still finds the unrecorded one (x >= 50)."""
    pinned()
    known = Finding(check="toy-below-50", family="mixtral", reason="odd x", signature=r"odd=True", reproducer="x")

    def odd_aware(cap: Any, family: Family, x: int) -> None:
        if x % 2:
            raise PropertyViolation(f"f({x}) rejected an odd x", odd=True)
        _below_50(cap, family, x)

    check = _check(holds=odd_aware)
    found = engine.execute(check, _target(lambda x: x, known_failures=[known]), FAMILY, profile="dev", seed=1)
    assert found.verdict.status == Status.FAIL and found.verdict.counterexample["x"] == 50, found.verdict
    only_known = engine.execute(check, _target(lambda x: 0, known_failures=[known]), FAMILY, profile="dev", seed=1)
    assert only_known.verdict.status == Status.KNOWN and only_known.verdict.counterexample["x"] % 2
    assert only_known.stats["known_failures_met"] > 0
    assert only_known.verdict.examples > 1, "the search went on past the known failure"
