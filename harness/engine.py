"""The one engine behind the CLI and the pytest cases: run a check over a target and a family."""

from __future__ import annotations

import time
import traceback
from typing import Any

import hypothesis
from hypothesis import given, settings

from harness.checks.base import Check
from harness.families import Family
from harness.profiles import profile_settings
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
    """Silence transformers' config warnings: tiny configs trip many of them, and none is a finding."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="transformers")


def reproduce_command(check: str, target: str, family: str, profile: str, seed: int, max_examples: int | None) -> str:
    extra = f" --max-examples {max_examples}" if max_examples else ""
    return (f"moe-harness run --target {target} --check {check} --family {family} "
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
    profile: str = "dev",
    max_examples: int | None = None,
    seed: int = DEFAULT_SEED,
) -> Verdict:
    """Run `check` on target × family under a Hypothesis profile; never raises, always a Verdict.

    A failing verdict carries the shrunk counterexample (the last failing example Hypothesis replays).
    """
    verdict = Verdict(check=check.name, target=target.name, family=family.name, status=PASS,
                      reproduce=reproduce_command(check.name, target.name, family.name, profile, seed, max_examples))
    start = time.perf_counter()
    try:
        reason = check.skip_reason(target, family)
    except Exception as exc:  # e.g. the family's tiny config cannot be built
        verdict.status, verdict.kind = ERROR, HARNESS_ERROR
        verdict.message = f"could not prepare {family.name}: {type(exc).__name__}: {exc}"
        return verdict
    if reason:
        verdict.status, verdict.message = SKIP, reason
        return verdict

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

    test = given(check.strategy(target, family))(body)
    test = settings(profile_settings(profile, max_examples))(test)
    test = hypothesis.seed(seed)(test)
    try:
        test()
    except BaseException as exc:  # noqa: BLE001 - every outcome becomes a verdict
        if isinstance(exc, KeyboardInterrupt):
            raise
        if not failures:
            kind, message, details, tol = _classify(exc)
            verdict.status, verdict.kind, verdict.message = ERROR, HARNESS_ERROR, message
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
    known = target.known_failure(check.name, family.name)
    if known is not None:
        if verdict.status == FAIL:
            verdict.status, verdict.known_reason = KNOWN, known.reason
        elif verdict.status == PASS:
            verdict.message = f"stale known failure: passes now ({known.reason})"
    return verdict


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | list | tuple | dict | type(None)) else repr(v)
            for k, v in details.items()}

