"""The one engine behind the CLI, the pytest cases and replay: run one check over a target and a family.

Guarantees: `execute` never raises for anything the check, the target or Hypothesis does (every
outcome becomes a Verdict); the same check, target, family, profile, seed and stored examples give the
same verdict; a new failure is saved to the regression store when one is given.
"""

from __future__ import annotations

import re
import shlex
import signal
import threading
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import hypothesis
from hypothesis import Phase, given, settings
from hypothesis.strategies import SearchStrategy

from harness.checks.base import Check
from harness.database import Record, RegressionStore, case_key
from harness.families import Family
from harness.outcome import CaseResult
from harness.pins import pins_for
from harness.profiles import CASE_SECONDS, DEFAULT_PROFILE, profile_settings
from harness.targets.base import Target
from harness.verdict import (
    CheckSkipped,
    ErrorKind,
    PropertyViolation,
    SkipKind,
    Status,
    TargetError,
    Verdict,
    skip_kind,
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


class CaseTimeout(BaseException):
    """The case ran past its wall limit. A BaseException, so neither the target's `except Exception` nor
    Hypothesis's shrinking holds it up: the case stops at once."""


@contextmanager
def _wall_limit(seconds: float | None) -> Iterator[None]:
    """Raise CaseTimeout in this thread once `seconds` have passed (SIGALRM: the main thread of a POSIX process
    only; elsewhere, or with no limit, nothing is armed). A hang inside C code that never returns to Python
    is not interrupted."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"the case ran past its wall limit of {seconds:g} s (a hang? --case-timeout sets the limit)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _classify(exc: BaseException) -> tuple[ErrorKind, str, dict[str, Any], str | None]:
    """(kind, message, details, tolerance) for an exception a property raised."""
    if isinstance(exc, CaseTimeout):
        return ErrorKind.TARGET_ERROR, str(exc), {}, None
    if isinstance(exc, PropertyViolation):
        return ErrorKind.PROPERTY_VIOLATION, exc.message, exc.details, exc.tolerance
    if isinstance(exc, TargetError):
        return ErrorKind.TARGET_ERROR, exc.message, {}, None
    tb = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{tb.filename}:{tb.lineno}"
    return ErrorKind.HARNESS_ERROR, f"harness error {type(exc).__name__}: {exc} (at {where})", {}, None


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
    case_seconds: float | None = None,
) -> CaseResult:
    """Run `check` on target × family under a Hypothesis profile; never raises, always a result.

    A failing verdict carries the shrunk counterexample (the last failing example Hypothesis replays).
    With a `store`, Hypothesis replays the case's stored failures first and saves new ones, and a new
    failure's record is written. `spec` is how the target was named, for the reproducer (default: the spec it
    was loaded by, else its name). A case running past `case_seconds` (default: the profile's CASE_SECONDS) is
    stopped: a target error naming the limit, with the example it was running as the counterexample.
    """
    spec = spec or target.spec or target.name
    max_examples = check.max_examples(profile, max_examples, target)
    verdict = Verdict(check=check.name, target=target.name, family=family.name, status=Status.PASS,
                      reproduce=reproduce_command(check.name, spec, family.name, profile, seed, max_examples))
    result = CaseResult(verdict, spec=spec, target_version=target.version)
    start = time.perf_counter()
    prepared = _prepare(check, target, family, verdict)
    if prepared is None:  # skipped, or the case could not be prepared
        _apply_known_failure(check, target, family, result)
        return result
    key = case_key(check.name, target.name, family.name)
    if store:
        result.stats["stored_examples"] = store.stored_examples(key)
    database = store.hypothesis_database() if store else None
    run = _Run(check, target, family)
    test_settings = profile_settings(profile, max_examples, database)
    with _wall_limit(CASE_SECONDS.get(profile) if case_seconds is None else case_seconds):
        pin_failures = _run_pins(run, prepared, test_settings)
        pin_failures.sort(key=lambda failed: not isinstance(failed[1], CaseTimeout))
        timed_out = bool(pin_failures) and isinstance(pin_failures[0][1], CaseTimeout)
        # A pin that hung ends the case: its timeout is the verdict, and nothing is generated.
        test = _no_generation if timed_out else _hypothesis_test(run, prepared, key, seed, test_settings)
        _run_and_judge(test, run, pin_failures, len(prepared.pinned), result)
    verdict.examples = run.examples
    verdict.seconds = round(time.perf_counter() - start, 3)
    _apply_known_failure(check, target, family, result)
    if store and store.record_failures and verdict.status == Status.FAIL:
        try:
            store.save(Record.of(result, profile, seed))
        except OSError as exc:  # a read-only checkout: the verdict stands, the report says what was not kept
            result.stats["record_not_saved"] = f"{type(exc).__name__}: {exc}"
    return result


@dataclass
class _Prepared:
    """What a case runs on: the check's strategy for target × family, and its pinned examples."""

    strategy: SearchStrategy[Any]
    pinned: list[Any]  # the pinned examples, built; they run first, in this order


@dataclass
class _Run:
    """One case's property as Hypothesis calls it: counts the examples and keeps every failing one.

    With `past_known` set (the generated phase), an example failing as one of the target's known failures
    is kept in `known_seen` and not raised on, so the search goes on for a failure nobody has recorded: a
    known defect every example trips (a loader that mishandles a key on every family) must not hide the rest.
    """

    check: Check
    target: Target
    family: Family
    examples: int = 0
    failures: list[tuple[Any, BaseException]] = field(default_factory=list)
    known_seen: list[tuple[Any, BaseException]] = field(default_factory=list)
    past_known: bool = False

    def call(self, example: Any) -> None:
        """The property on one drawn example; a failure is kept (with its example) and raised on, unless
        `past_known` and the target lists it as known."""
        self.examples += 1
        try:
            self.check.prop(self.target, self.family, example)
        except BaseException as exc:
            if self.past_known and self._known(example, exc):
                self.known_seen.append((example, exc))
                return
            self.failures.append((example, exc))
            raise

    def _known(self, example: Any, exc: BaseException) -> bool:
        """Whether `exc` on `example` is a failure (not a skip, not our own error) the target records."""
        if not isinstance(exc, PropertyViolation | TargetError):
            return False
        found = _failure_record(self.check, example, exc)
        return self.target.known_failure(self.check.name, self.family.name, found[3]) is not None


def _prepare(check: Check, target: Target, family: Family, verdict: Verdict) -> _Prepared | None:
    """The case's strategy and built pins; None when it cannot run, with `verdict` then set to SKIP (the
    check does not apply, with the reason's kind), to FAIL (the target's own code raised while the case was
    set up: building the family's model, say) or to a harness ERROR (our code could not set it up)."""
    try:
        reason = check.skip_reason(target, family)
        if reason:
            verdict.status, verdict.message, verdict.skip_kind = Status.SKIP, str(reason), skip_kind(reason)
            return None
        strategy = check.strategy(target, family)
        pinned = [pin.build() for pin in pins_for(check.name, target.name, family.name)]
    except CheckSkipped as exc:
        verdict.status, verdict.message, verdict.skip_kind = Status.SKIP, str(exc.reason), skip_kind(exc.reason)
        return None
    except TargetError as exc:  # the target's code raised before any example (its model does not build)
        verdict.status, verdict.kind, verdict.message = Status.FAIL, ErrorKind.TARGET_ERROR, exc.message
        verdict.counterexample = {"setup": exc.message}
        return None
    except Exception as exc:  # our own preparation failed (a tiny config we cannot shrink, say)
        verdict.status, verdict.kind = Status.ERROR, ErrorKind.HARNESS_ERROR
        verdict.message = f"could not prepare {family.name}: {type(exc).__name__}: {exc}"
        return None
    return _Prepared(strategy, pinned)


def _hypothesis_test(run: _Run, prepared: _Prepared, key: bytes, seed: int,
                     test_settings: settings) -> Callable[[], None]:
    """The Hypothesis test of `run`: draws from the seed under the profile's settings, its examples stored
    under `key` (the case's names, see case_key). Pins are not part of it: `_run_pins` runs them first, so a
    failing pin does not stop generation from finding another counterexample."""

    def body(example: Any) -> None:
        run.past_known = True
        run.call(example)

    test = given(prepared.strategy)(body)
    # @seed clears the database from the settings it finds, so the settings go on after it.
    test = hypothesis.seed(seed)(test)
    test = settings(test_settings)(test)
    # The attribute Hypothesis's own `find(database_key=...)` sets: the key then depends on the case's
    # names only (see case_key), not on this function's source.
    test._hypothesis_internal_database_key = key  # type: ignore[attr-defined]
    return test


def _run_pins(run: _Run, prepared: _Prepared, test_settings: settings) -> list[tuple[Any, BaseException]]:
    """Each pinned example through the property, in order, each as its own explicit-example Hypothesis test
    (a property may call `reject` or `target`); the ones that fail, with their exceptions."""
    def body(example: Any) -> None:
        run.call(example)

    failed = []
    for value in prepared.pinned:
        test = given(prepared.strategy)(body)
        test = settings(test_settings, phases=(Phase.explicit,), database=None)(hypothesis.example(value)(test))
        try:
            test()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - judged like any failing example
            if run.failures:
                failed.append(run.failures[-1])
            if isinstance(exc, CaseTimeout):  # the wall limit is spent: no further pin runs
                break
    run.failures.clear()  # the generated phase's failures are judged first; pins are the fallback
    return failed


def _no_generation() -> None:
    """The generated phase of a case whose pins already spent its wall limit: nothing runs."""


def _run_and_judge(test: Callable[[], None], run: _Run, pin_failures: list[tuple[Any, BaseException]],
                   pinned: int, result: CaseResult) -> None:
    """Run `test` after the `pinned` pins (of which `pin_failures` failed) and record how it ended in `result`
    (status, kind, message, counterexample, blob, stats): a generated failure is judged first, else the first
    failing pin; only KeyboardInterrupt escapes, and a pass leaves the verdict as it was."""
    if pinned:
        result.stats["pins"] = {"run": pinned, "failed": len(pin_failures)}
    raw_stats: list[dict[str, Any]] = []
    try:
        with _statistics(raw_stats):
            test()
    except unittest.SkipTest as exc:  # the profile generates nothing and no example is stored
        if not pinned:
            result.verdict.status, result.verdict.message = Status.SKIP, f"no example to run: {exc}"
            result.verdict.skip_kind = SkipKind.NOT_APPLICABLE
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every outcome becomes a verdict
        result.blob = _blob(exc)
        _judge_failure(run, exc, result.verdict)
    if raw_stats:
        result.stats.update(_summarise(raw_stats[-1]))
    # Nothing new was generated: a failing pin, else the first known failure generation met, is the verdict.
    fallback = pin_failures[:1] or run.known_seen[:1]
    if result.verdict.status in (Status.PASS, Status.SKIP) and fallback:
        run.failures[:] = fallback
        _judge_failure(run, fallback[0][1], result.verdict)
    if run.known_seen:
        result.stats["known_failures_met"] = len(run.known_seen)


def _judge_failure(run: _Run, exc: BaseException, verdict: Verdict) -> None:
    """FAIL, or ERROR for a harness error, from the last failing example (the shrunk one Hypothesis
    replays); when no example failed, Hypothesis or the strategy raised `exc`: a harness ERROR."""
    if not run.failures:
        verdict.status, verdict.kind = Status.ERROR, ErrorKind.HARNESS_ERROR
        verdict.message = _classify(exc)[1]
        return
    example, err = run.failures[-1]
    if isinstance(err, CheckSkipped):  # the check found, mid-example, that it does not apply
        verdict.status, verdict.message, verdict.skip_kind = Status.SKIP, str(err.reason), skip_kind(err.reason)
        return
    kind, message, tolerance, verdict.counterexample = _failure_record(run.check, example, err)
    verdict.status = Status.ERROR if kind == ErrorKind.HARNESS_ERROR else Status.FAIL
    verdict.kind, verdict.message, verdict.tolerance = kind, message, tolerance


def _failure_record(check: Check, example: Any, err: BaseException) -> tuple[ErrorKind, str, str | None,
                                                                              dict[str, Any]]:
    """(kind, message, tolerance, counterexample) of `err` raised on `example`: the counterexample is the
    example as the check describes it plus the failure's details, what a finding's signature is matched on."""
    kind, message, details, tolerance = _classify(err)
    if kind == ErrorKind.TARGET_ERROR:  # what the target raised, for a finding's signature to match
        details = {"error": message, **details}
    try:
        counterexample = {**check.describe(example), **_plain(details)}
    except Exception as describe_exc:
        counterexample = {"describe_failed": repr(describe_exc)}
    return kind, message, tolerance, counterexample


def _apply_known_failure(check: Check, target: Target, family: Family, result: CaseResult) -> None:
    """A FAIL the target lists as a known failure (for this counterexample) becomes KNOWN; a PASS it
    lists is marked stale, its message saying the entry should go; one skipped or errored is unconfirmed."""
    verdict = result.verdict
    known = target.known_failure(check.name, family.name, verdict.counterexample)
    if known is None:
        return
    if verdict.status == Status.FAIL:
        verdict.status, verdict.known_reason = Status.KNOWN, known.reason
    elif verdict.status == Status.PASS:
        verdict.message = f"stale known failure: passes now ({known.reason})"
        result.stale = True
    else:  # skipped or errored: the entry is neither confirmed nor stale, and the report says so
        result.unconfirmed = known.reason


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
    """`details` with every value JSON can hold kept as it is and any other value as its repr."""
    return {k: v if isinstance(v, str | int | float | bool | list | tuple | dict | type(None)) else repr(v)
            for k, v in details.items()}
