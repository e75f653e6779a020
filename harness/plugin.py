"""The pytest plugin (entry point `pytest11`): the CLI's profiles, regression database and report for pytest.

Cases call `run_case(..., **moe_profile)`; the fixture carries the options below. What it guarantees:
- `--moe-profile NAME` picks the same profile as `moe-harness run --profile NAME`; given explicitly, it is
  also loaded as Hypothesis's active profile, so plain `@given` tests (GPU kernel tests) follow it too.
- Every case reads the local and shared databases; Hypothesis writes only the local one.
- A FAIL verdict inside a test that failed is a new failure: its record is written, and promoted into
  the shared directory when promoting (default: the nightly profile). A FAIL verdict inside a test that
  passed was expected by the suite (a seed bug it must catch): no record, and the report says expected.
- `--moe-report-dir DIR` writes report.json / report.md / junit.xml for every case run, gathered from all
  xdist workers on the controller.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from harness.database import LOCAL_DIR, SHARED_DIR, Record, RegressionStore
from harness.engine import DEFAULT_SEED
from harness.outcome import CaseResult
from harness.profiles import DEFAULT_PROFILE, PROFILES, PROMOTING_PROFILE, register_hypothesis_profiles
from harness.reports.directory import write_report_dir
from harness.reports.document import Report, RunInfo, TargetInfo
from harness.reports.text import render_written
from harness.targets import load_target
from harness.verdict import Status
from harness.versions import library_versions

# The report user-property that carries one test's results from an xdist worker to the controller.
_PROPERTY = "moe_harness_results"
_CASE_RESULTS = pytest.StashKey[list[CaseResult]]()
_PREVIOUS_PROFILE = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("moe-harness")
    group.addoption("--moe-profile", default=None, choices=list(PROFILES),
                    help=f"Hypothesis profile for moe-harness cases (default: {DEFAULT_PROFILE}); "
                         "given explicitly, also Hypothesis's active profile")
    group.addoption("--moe-max-examples", type=int, default=None, help="override the profile's example count")
    group.addoption("--moe-seed", type=int, default=DEFAULT_SEED, help="Hypothesis seed of every case")
    group.addoption("--moe-db", type=Path, default=LOCAL_DIR, help=f"local example database (default: {LOCAL_DIR})")
    group.addoption("--moe-regressions", type=Path, default=SHARED_DIR,
                    help="shared regression directory (default: cases/regressions)")
    group.addoption("--moe-promote", action=argparse.BooleanOptionalAction, default=None,
                    help=f"write new failures into the shared directory (default: only with {PROMOTING_PROFILE})")
    group.addoption("--moe-report-dir", type=Path, default=None, help="write report.json, report.md, junit.xml")


def _profile(config: pytest.Config) -> str:
    return config.getoption("--moe-profile") or DEFAULT_PROFILE


def _store(config: pytest.Config) -> RegressionStore:
    promote = config.getoption("--moe-promote")
    return RegressionStore(config.getoption("--moe-db"), config.getoption("--moe-regressions"),
                           promote_new=_profile(config) == PROMOTING_PROFILE if promote is None else promote,
                           record_failures=False)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--moe-profile"):
        # Older Hypothesis versions have no get_current_profile_name; "default" is what they start with.
        current = getattr(settings, "get_current_profile_name", lambda: "default")
        config.stash[_PREVIOUS_PROFILE] = current()
        register_hypothesis_profiles(config.getoption("--moe-max-examples"))
        settings.load_profile(f"moe-{_profile(config)}")
    report_dir = config.getoption("--moe-report-dir")
    if report_dir is not None and not hasattr(config, "workerinput"):  # the controller writes the report
        config.pluginmanager.register(_ReportWriter(config, report_dir), "moe-harness-report")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the process back the Hypothesis profile it had (an in-process pytest run must not leak it)."""
    if _PREVIOUS_PROFILE in config.stash:
        settings.load_profile(config.stash[_PREVIOUS_PROFILE])


@pytest.fixture
def moe_profile(request: pytest.FixtureRequest) -> dict[str, object]:
    """Keyword arguments for `harness.engine.run_case` from the command line."""
    config = request.config
    results = request.node.stash.setdefault(_CASE_RESULTS, [])
    return {"profile": _profile(config), "max_examples": config.getoption("--moe-max-examples"),
            "seed": config.getoption("--moe-seed"), "store": _store(config), "observe": results.append}


# An old-style hook wrapper: new-style ones need pytest 8, and a GPU machine may have an older one.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    results = item.stash.get(_CASE_RESULTS, [])
    if report.when == "call" and results:
        store = _store(item.config)
        for r in results:
            r.expected = r.verdict.status == Status.FAIL and not report.failed
            if r.verdict.status == Status.FAIL and report.failed:
                store.save(Record.of(r, _profile(item.config), item.config.getoption("--moe-seed")))
        report.user_properties.append((_PROPERTY, json.dumps([r.to_dict() for r in results], default=str)))


class _ReportWriter:
    """Gathers every test's case results (from all workers) and writes the report directory at the end."""

    def __init__(self, config: pytest.Config, directory: Path) -> None:
        self.config, self.directory = config, directory
        self.results: list[CaseResult] = []
        self.paths: list[Path] = []
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.clock = time.perf_counter()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == _PROPERTY:
                self.results.extend(CaseResult.from_dict(d) for d in json.loads(str(value)))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = self.config
        targets = {r.spec: _target_info(r) for r in {r.spec: r for r in self.results}.values()}
        workers = _workers(config)
        run = RunInfo("pytest " + shlex.join(config.invocation_params.args), _profile(config),
                      config.getoption("--moe-seed"), config.getoption("--moe-max-examples"), workers,
                      self.started, round(time.perf_counter() - self.clock, 3), library_versions())
        self.paths = write_report_dir(Report(run, list(targets.values()), self.results), self.directory)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(render_written(self.paths, "moe-harness report"))


def _target_info(result: CaseResult) -> TargetInfo:
    """The target's description and capabilities, loaded again here (results come from worker processes);
    what the result itself says when it does not load here."""
    try:
        return TargetInfo.of(result.spec, load_target(result.spec))
    except Exception:  # noqa: BLE001 - the report keeps the result's own name and version
        return TargetInfo(result.spec, result.verdict.target, result.target_version)


def _workers(config: pytest.Config) -> int:
    """Worker processes of the run: `-n N`, or the sum over `--tx [N*]spec` entries; 1 without xdist."""
    tx = getattr(config.option, "tx", None) or []
    from_tx = sum(int(t.split("*", 1)[0]) if "*" in t else 1 for t in tx)
    numprocesses = getattr(config.option, "numprocesses", None)
    return from_tx or (numprocesses if isinstance(numprocesses, int) and numprocesses > 0 else 1)
