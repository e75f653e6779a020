"""The report of one run as data: what ran (versions, profile, seed), on which targets, and every result.

`Report.to_json` / `Report.from_json` round-trip exactly; report.json is this, and `moe-harness report DIR`
renders from it alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from harness.outcome import CaseResult
from harness.verdict import Status

if TYPE_CHECKING:  # torch comes with it: reading and rendering a report imports no library
    from harness.targets.base import Target

SCHEMA = 1

# Columns of every summary, in order: a failure the suite expected counts as known, so the fail
# column holds new failures only.
NEW_FAIL = Status.FAIL
COLUMNS = (Status.PASS, NEW_FAIL, Status.KNOWN, Status.ERROR, Status.SKIP)


def column(result: CaseResult) -> Status:
    """The summary column a result counts in."""
    if result.verdict.status == Status.FAIL and result.expected:
        return Status.KNOWN
    return result.verdict.status


def column_counts(results: list[CaseResult]) -> dict[Status, int]:
    """How many of `results` count in each summary column (every column present)."""
    counts = dict.fromkeys(COLUMNS, 0)
    for r in results:
        counts[column(r)] += 1
    return counts


@dataclass
class TargetInfo:
    """A target as the run saw it; `status` is "loaded", "unavailable" (a dependency is missing), "error", or
    "elsewhere" (`moe-harness targets` only: it runs in its own environment, named in `environment`)."""

    spec: str
    name: str
    version: str = ""
    description: str = ""
    capabilities: list[str] = field(default_factory=list)
    status: str = "loaded"
    reason: str = ""
    environment: str = ""  # the environment of its own it ran in ("": the one the run started in)

    @classmethod
    def of(cls, spec: str, target: Target) -> TargetInfo:
        return cls(spec, target.name, target.version, target.description, target.capabilities())

    @classmethod
    def unloaded(cls, spec: str, reason: str, error: bool, environment: str = "") -> TargetInfo:
        return cls(spec, spec, status="error" if error else "unavailable", reason=reason, environment=environment)

    @classmethod
    def from_dict(cls, data: dict[str, Any], environment: str = "") -> TargetInfo:
        """A TargetInfo written by `asdict`, as it ran in `environment` (kept as written when not given)."""
        info = cls(**_known(cls, data))
        return dataclasses.replace(info, environment=environment) if environment else info


@dataclass
class RunInfo:
    command: str
    profile: str
    seed: int
    max_examples: int | None
    workers: int
    started: str
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    # Ctrl-C stopped the run: the report holds the cases that finished, of `planned`.
    interrupted: bool = False
    planned: int | None = None
    # (spec, check) pairs left out because the target has no capability for the check (checks not named)
    not_offered: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Report:
    run: RunInfo
    targets: list[TargetInfo]
    results: list[CaseResult]

    def to_json(self) -> str:
        data = {"schema": SCHEMA, "run": asdict(self.run), "targets": [asdict(t) for t in self.targets],
                "summary": self.totals(), "results": [r.to_dict() for r in self.results]}
        return json.dumps(data, indent=2, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        if data.get("schema") != SCHEMA:
            raise ValueError(f"report schema {data.get('schema')!r}; this moe-harness reads schema {SCHEMA}")
        return cls(run=RunInfo(**_known(RunInfo, data["run"])),
                   targets=[TargetInfo.from_dict(t) for t in data["targets"]],
                   results=[CaseResult.from_dict(r) for r in data["results"]])

    def totals(self) -> dict[Status, int]:
        return column_counts(self.results)

    def findings(self) -> list[CaseResult]:
        """New failures and errors, one per case."""
        return [r for r in self.results if r.new_failure or r.verdict.status == Status.ERROR]

    def bugs(self) -> list[list[CaseResult]]:
        """The findings grouped into bugs, each shown as one bug report: cases of one target and check that
        failed the same way (see `signature`) on several families; groups and members in first-seen order."""
        groups: dict[str, list[CaseResult]] = {}
        for r in self.findings():
            groups.setdefault(signature(r), []).append(r)
        return list(groups.values())

    def known_failures(self) -> list[CaseResult]:
        return [r for r in self.results if column(r) == Status.KNOWN]

    def stale(self) -> list[CaseResult]:
        return [r for r in self.results if r.stale]

    def unconfirmed(self) -> list[CaseResult]:
        """Cases with a known-failure entry that were skipped or errored here, so the entry went unchecked."""
        return [r for r in self.results if r.unconfirmed]


def signature(result: CaseResult) -> str:
    """What makes two failing cases one bug: target, check, status, kind, message, counterexample and tolerance
    all equal (only the family differs). Exact, so two different bugs never share a report."""
    v = result.verdict
    return json.dumps([v.target, v.check, v.status, v.kind, v.message, v.counterexample, v.tolerance],
                      sort_keys=True, default=str)


def targets_json(infos: list[TargetInfo]) -> str:
    """`moe-harness targets --json`: every target as the "targets" entries of report.json hold it."""
    return json.dumps([asdict(i) for i in infos], indent=2)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
