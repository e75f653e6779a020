"""Run a plan's cases in N worker processes (or in this process), yielding each result as it ends.

Workers are spawned, not forked: the parent has already imported torch and transformers, whose thread
pools do not survive a fork. Each worker re-loads the targets by the spec the user gave, so an adapter
given as `module:object` works there too; only names cross the process boundary, and results come back
as plain dataclasses.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from harness.checks import CHECKS
from harness.database import RegressionStore
from harness.engine import execute, quiet_libraries, reproduce_command
from harness.families import get_family
from harness.outcome import CaseResult
from harness.pseudo_families import NO_FAMILY
from harness.selection import Case, Missing, Plan
from harness.targets import load_target
from harness.targets.base import Target
from harness.verdict import ErrorKind, SkipKind, Status, Verdict


@dataclass(frozen=True)
class RunOptions:
    """Everything a case needs besides its names; the same in every worker."""

    profile: str
    max_examples: int | None
    seed: int
    store: RegressionStore | None
    case_seconds: float | None = None  # None: the profile's wall limit per case


def run_cases(cases: list[Case], options: RunOptions, workers: int = 1) -> Iterator[tuple[int, CaseResult]]:
    """(index into `cases`, result) for every case, in order with at most one worker, as they finish with more.
    With `workers` >= 1 cases run in spawned processes, so a native crash costs only its own case; with 0 they
    run in this process (a debugger reaches them; a crash ends the run)."""
    if workers <= 0:
        for i, case in enumerate(cases):
            yield i, _execute(case.check.name, case.target, case.family.name, case.spec, options)
        return
    yield from _run_in_pools(cases, options, workers)


def _run_in_pools(cases: list[Case], options: RunOptions, workers: int) -> Iterator[tuple[int, CaseResult]]:
    """Every case over `workers` spawned processes. A worker's death breaks the whole pool, failing every case
    still in it, so those cases run again one at a time in a one-worker pool (rebuilt after each death): only
    the case that kills its own worker there is reported as failed."""
    broken: list[int] = []
    pool = _pool(workers)
    try:
        futures = {_submit(pool, cases[i], options): i for i in range(len(cases))}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool:
                broken.append(futures[future])
            except Exception as exc:  # the worker could not run it (its target did not load there, say)
                yield futures[future], _worker_failed(cases[futures[future]], exc)
        _stop(pool)
        pool = _pool(1)
        for i in sorted(broken):
            try:
                yield i, _submit(pool, cases[i], options).result()
            except BrokenProcessPool:  # this case, alone in its pool, killed its worker: the target crashed
                yield i, _crashed(cases[i], options)
                _stop(pool)
                pool = _pool(1)
            except Exception as exc:
                yield i, _worker_failed(cases[i], exc)
    finally:  # also when the caller stops early (Ctrl-C): queued cases are dropped, running ones abandoned
        _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut `pool` down without waiting: cancel what is queued and end the workers still running a case."""
    processes = list(getattr(pool, "_processes", {}).values())  # private, but the only handle on the workers
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(workers,))


def _submit(pool: ProcessPoolExecutor, case: Case, options: RunOptions) -> Future[CaseResult]:
    return pool.submit(_run_in_worker, case.check.name, case.spec, case.family.name, options)


def _execute(check: str, target: Target, family: str, spec: str, options: RunOptions) -> CaseResult:
    return execute(CHECKS[check], target, get_family(family), profile=options.profile,
                   max_examples=options.max_examples, seed=options.seed, store=options.store, spec=spec,
                   case_seconds=options.case_seconds)


def _start_worker(workers: int) -> None:
    import torch

    quiet_libraries()
    # Share the cores between the workers instead of each taking all of them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@functools.cache
def _target(spec: str) -> Target:
    return load_target(spec)


def _run_in_worker(check: str, spec: str, family: str, options: RunOptions) -> CaseResult:
    return _execute(check, _target(spec), family, spec, options)


def _crashed(case: Case, options: RunOptions) -> CaseResult:
    """The verdict of a case whose worker process died while running it alone (abort, segfault, OOM kill)."""
    verdict = Verdict(case.check.name, case.target.name, case.family.name, Status.FAIL, ErrorKind.TARGET_ERROR,
                      "the worker process running this case died (a native crash: abort, segfault or the OOM "
                      "killer); run alone in a fresh worker it died again, so the crash is this case's",
                      counterexample={"crash": "worker process died while running this case alone"},
                      reproduce=reproduce_command(case.check.name, case.spec, case.family.name, options.profile,
                                                  options.seed, options.max_examples))
    return CaseResult(verdict, spec=case.spec)


def _worker_failed(case: Case, exc: Exception) -> CaseResult:
    verdict = Verdict(case.check.name, case.target.name, case.family.name, Status.ERROR, ErrorKind.HARNESS_ERROR,
                      f"worker process failed: {type(exc).__name__}: {exc}")
    return CaseResult(verdict, spec=case.spec)


def unavailable_results(missing: list[Missing], checks: list[str]) -> list[CaseResult]:
    """One result per check for each target that did not load: skip when a dependency is missing here,
    error when the target's own code raised. Family "*": no family of it ran."""
    return [CaseResult(_unavailable(check, m), spec=m.spec) for m in missing for check in checks]


def absent_results(selection: Plan) -> list[CaseResult]:
    """A not-applicable skip for each target, check offered and family of the selection's that this environment's
    transformers does not have."""
    from transformers import __version__

    offered = set(selection.not_offered)
    return [CaseResult(Verdict(check, spec, family, Status.SKIP, None,
                               f"transformers {__version__} of this environment has no family {family}",
                               skip_kind=SkipKind.NOT_APPLICABLE), spec=spec)
            for spec, _ in selection.targets for check in selection.checks if (spec, check) not in offered
            for family in selection.absent]


def _unavailable(check: str, missing: Missing) -> Verdict:
    """SKIP when a dependency of the target is missing here; an ERROR of kind target-error when its own code
    raised while loading (nothing of it could run, so the run cannot pass, but the fault is the target's), of
    kind environment-error when its environment failed it."""
    if missing.error:
        kind = ErrorKind.ENVIRONMENT_ERROR if missing.environment else ErrorKind.TARGET_ERROR
        return Verdict(check, missing.spec, NO_FAMILY, Status.ERROR, kind, missing.reason)
    # Its library is not installed in this environment: nothing of it can run here.
    return Verdict(check, missing.spec, NO_FAMILY, Status.SKIP, None, missing.reason,
                   skip_kind=SkipKind.NOT_APPLICABLE)
