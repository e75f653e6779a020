"""The one engine behind the CLI, the pytest cases and replay: run one check over a target and a family.

Guarantees: `execute` never raises for anything the check, the target or Hypothesis does (every
outcome becomes a Verdict); the same check, target, family, profile, seed and stored examples give the
same verdict; a new failure is saved to the regression store when one is given.
"""

from __future__ import annotations

import re
import shlex
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hypothesis
from hypothesis import given, settings

from harness.checks.base import Check
from harness.database import Record, RegressionStore, case_key
from harness.families import Family
from harness.outcome import CaseResult
from harness.pinned import pins_for
from harness.profiles import DEFAULT_PROFILE, profile_settings
from harness.targets.base import Target
from harness.verdict import (
    ERROR,
    FAIL,
    HARNESS_ERROR,
    KNOWN,
    PASS,
    PROPERTY_VIOLATION,
    SKIP,
    TARGET_ERROR,
    PropertyViolation,
    TargetError,
    Verdict,
)

DEFAULT_SEED = 20260514


def quiet_libraries() -> None:
    """Silence transformers' config warnings (tiny configs trip many of them, and none is a finding) and
    its per-load progress bars (hundreds of tiny loads in a run)."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")


def reproduce_command(check: str, target: str, family: str, profile: str, seed: int, max_examples: int | None) -> str:
    """The `moe-harness run` line that re-runs exactly one case (`target` as given: name or spec)."""
    extra = f" --max-examples {max_examples}" if max_examples else ""
    return (f"moe-harness run --target {shlex.quote(target)} --check {check} --family {family} "
            f"--profile {profile} --seed {seed}{extra}")


def _classify(exc: BaseException) -> tuple[str, str, dict[str, Any], str | None]:
    """(kind, message, details, tolerance) for an exception a property raised."""
    if isinstance(exc, PropertyViolation):
        return PROPERTY_VIOLATION, exc.message, exc.details, exc.tolerance
    if isinstance(exc, TargetError):
        return TARGET_ERROR, exc.message, {}, None
    tb = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{tb.filename}:{tb.lineno}"
    return HARNESS_ERROR, f"harness error {type(exc).__name__}: {exc} (at {where})", {}, None


def run_case(
    check: Check,
    target: Target,
    family: Family,
    *,
    profile: str = DEFAULT_PROFILE,
    max_examples: int | None = None,
    seed: int = DEFAULT_SEED,
    store: RegressionStore | None = None,
    observe: Callable[[CaseResult], None] | None = None,
) -> Verdict:
    """`execute`, returning only the Verdict; `observe` (the pytest plugin's) sees the full result."""
    result = execute(check, target, family, profile=profile, max_examples=max_examples, seed=seed, store=store)
    if observe is not None:
        observe(result)
    return result.verdict


def execute(
    check: Check,
    target: Target,
    family: Family,
    *,
    profile: str = DEFAULT_PROFILE,
    max_examples: int | None = None,
    seed: int = DEFAULT_SEED,
    store: RegressionStore | None = None,
    spec: str | None = None,
) -> CaseResult:
    """Run `check` on target × family under a Hypothesis profile; never raises, always a result.

    A failing verdict carries the shrunk counterexample (the last failing example Hypothesis replays).
    With a `store`, Hypothesis replays the case's stored failures first and saves new ones, and a new
    failure's record is written. `spec` is how the target was named, for the reproducer.
    """
    spec = spec or target.name
    max_examples = check.max_examples(profile, max_examples)
    verdict = Verdict(check=check.name, target=target.name, family=family.name, status=PASS,
                      reproduce=reproduce_command(check.name, spec, family.name, profile, seed, max_examples))
    result = CaseResult(verdict, spec=spec, target_version=target.version)
    start = time.perf_counter()
    try:
        reason = check.skip_reason(target, family)
        if reason:
            verdict.status, verdict.message = SKIP, reason
            return result
        strategy = check.strategy(target, family)
        pinned = [pin.build() for pin in pins_for(check.name, target.name, family.name)]
    except Exception as exc:  # e.g. the family's tiny config cannot be built
        verdict.status, verdict.kind = ERROR, HARNESS_ERROR
        verdict.message = f"could not prepare {family.name}: {type(exc).__name__}: {exc}"
        return result

    failures: list[tuple[Any, BaseException]] = []
    count = 0

    def body(example: Any) -> None:
        nonlocal count
        count += 1
        try:
            check.prop(target, family, example)
        except BaseException as exc:
            failures.append((example, exc))
            raise

    key = case_key(check.name, target.name, family.name)
    database = store.hypothesis_database() if store else None
    if store:
        result.stats["stored_examples"] = store.stored_examples(key)
    test = given(strategy)(body)
    for value in reversed(pinned):  # decorators apply inside out: the first pin runs first
        test = hypothesis.example(value)(test)
    # @seed clears the database from the settings it finds, so the settings go on after it.
    test = hypothesis.seed(seed)(test)
    test = settings(profile_settings(profile, max_examples, database))(test)
    # The attribute Hypothesis's own `find(database_key=...)` sets: the key then depends on the case's
    # names only (see case_key), not on this function's source.
    test._hypothesis_internal_database_key = key  # type: ignore[attr-defined]
    raw_stats: list[dict[str, Any]] = []
    try:
        with _statistics(raw_stats):
            test()
    except unittest.SkipTest as exc:  # the profile generates nothing and no example is stored
        verdict.status, verdict.message = SKIP, f"no example to run: {exc}"
    except BaseException as exc:  # noqa: BLE001 - every outcome becomes a verdict
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.blob = _blob(exc)
        if not failures:  # Hypothesis itself, or the strategy, raised
            verdict.status, verdict.kind, verdict.message = ERROR, HARNESS_ERROR, _classify(exc)[1]
        else:
            example, err = failures[-1]
            kind, message, details, tol = _classify(err)
            verdict.status = ERROR if kind == HARNESS_ERROR else FAIL
            verdict.kind, verdict.message, verdict.tolerance = kind, message, tol
            try:
                verdict.counterexample = {**check.describe(example), **_plain(details)}
            except Exception as describe_exc:
                verdict.counterexample = {"describe_failed": repr(describe_exc)}
    verdict.examples = count
    verdict.seconds = round(time.perf_counter() - start, 3)
    if raw_stats:
        result.stats.update(_summarise(raw_stats[-1]))
    known = target.known_failure(check.name, family.name)
    if known is not None:
        if verdict.status == FAIL:
            verdict.status, verdict.known_reason = KNOWN, known.reason
        elif verdict.status == PASS:
            verdict.message = f"stale known failure: passes now ({known.reason})"
            result.stale = True
    if store and store.record_failures and verdict.status == FAIL:
        store.save(Record.of(result, profile, seed))
    return result


@contextmanager
def _statistics(into: list[dict[str, Any]]) -> Iterator[None]:
    """Collect the statistics Hypothesis reports for a run (the hook its pytest plugin uses)."""
    try:
        from hypothesis.statistics import collector
    except ImportError:  # another Hypothesis version: statistics are a nicety, not a result
        yield
        return
    with collector.with_value(into.append):  # type: ignore[arg-type]  # declared with its None default
        yield


def _summarise(stats: dict[str, Any]) -> dict[str, Any]:
    """Per phase: calls by status, seconds, successful shrinks; why Hypothesis stopped; target scores."""
    out: dict[str, Any] = {}
    for name, phase in stats.items():
        if not name.endswith("-phase") or not isinstance(phase, dict):
            continue
        calls = phase.get("test-cases", [])
        statuses: dict[str, int] = {}
        for call in calls:
            statuses[call.get("status", "?")] = statuses.get(call.get("status", "?"), 0) + 1
        out[name.removesuffix("-phase")] = {
            "calls": len(calls),
            "by_status": statuses,
            "seconds": round(phase.get("duration-seconds", 0.0), 3),
            "shrinks_successful": phase.get("shrinks-successful", 0),
        }
    if stats.get("stopped-because"):
        out["stopped_because"] = stats["stopped-because"]
    if stats.get("targets"):
        out["targets"] = dict(stats["targets"])
    return out


def _blob(exc: BaseException) -> str | None:
    """The `@reproduce_failure(...)` line Hypothesis attaches when the profile prints blobs."""
    for note in getattr(exc, "__notes__", ()):
        found = re.search(r"@reproduce_failure\(.*?\)", note)
        if found:
            return found.group(0)
    return None


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | list | tuple | dict | type(None)) else repr(v)
            for k, v in details.items()}
