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
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
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


class DeferredInterrupt:
    """While entered (in the main thread, with Python's default SIGINT handler), SIGINT only sets a flag, and
    `check` raises KeyboardInterrupt where the run can stop cleanly. Raised wherever the signal lands, inside the
    standard library's waits for a worker, it can break their locks: a run on the H200 then ended in 'RuntimeError:
    release unlocked lock' with a traceback and no report."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def __enter__(self) -> DeferredInterrupt:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]


# How often a run waiting for its workers looks for a Ctrl-C.
POLL_SECONDS = 0.2


def _finished(futures: set[Future[CaseResult]], interrupt: DeferredInterrupt) -> Iterator[Future[CaseResult]]:
    """Each of `futures` as it finishes; KeyboardInterrupt between waits once a Ctrl-C came."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        yield from done
        interrupt.check()


def _run_in_pools(cases: list[Case], options: RunOptions, workers: int) -> Iterator[tuple[int, CaseResult]]:
    """Every case over `workers` spawned processes. A worker's death breaks the whole pool, failing every case
    still in it, so those cases run again one at a time in a one-worker pool (rebuilt after each death): only
    the case that kills its own worker there is reported as failed. A Ctrl-C stops it between results."""
    broken: list[int] = []
    pool = _pool(workers)
    with DeferredInterrupt() as interrupt:
        try:
            futures = {_submit(pool, cases[i], options): i for i in range(len(cases))}
            for future in _finished(set(futures), interrupt):
                try:
                    yield futures[future], future.result()
                except BrokenProcessPool:
                    broken.append(futures[future])
                except Exception as exc:  # the worker could not run it (its target did not load there, say)
                    yield futures[future], _worker_failed(cases[futures[future]], exc)
            _stop(pool)
            pool = _pool(1)
            for i in sorted(broken):
                rerun = _submit(pool, cases[i], options)
                try:
                    yield i, next(_finished({rerun}, interrupt)).result()
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

    # A terminal's Ctrl-C signals the whole process group: the parent stops the run and ends its workers, and a
    # worker interrupted on its own would only add a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
