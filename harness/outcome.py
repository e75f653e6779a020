"""What running one case yields beyond its Verdict: Hypothesis statistics, the failure blob, staleness.

A CaseResult is plain data (picklable for worker processes, JSON-round-trippable for report.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.verdict import Status, Verdict


@dataclass
class CaseResult:
    """One check × target × family, run once.

    `spec` is how the target was named (a name or `module:object`) and `target_version` its version; `stats`
    holds Hypothesis's per-phase statistics (calls, seconds, why it stopped); `blob` is the
    `@reproduce_failure(...)` line when the profile prints blobs; `stale` is True when the case
    passed although the target lists it as a known failure; `unconfirmed` holds the reason of a known-failure
    entry whose case was skipped or errored here, so the run neither confirms it nor finds it stale; `expected` is True when the suite
    running it expected the failure (a seed bug it must catch), so it is no new finding.
    """

    verdict: Verdict
    spec: str = ""
    target_version: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    blob: str | None = None
    stale: bool = False
    unconfirmed: str | None = None
    expected: bool = False

    @property
    def new_failure(self) -> bool:
        return self.verdict.status == Status.FAIL and not self.expected

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        """The inverse of to_dict; unknown keys (from a newer harness) are ignored."""
        verdict_keys = {f.name for f in fields(Verdict)}
        verdict = Verdict(**{k: v for k, v in data["verdict"].items() if k in verdict_keys})
        own = {f.name for f in fields(cls)} - {"verdict"}
        return cls(verdict=verdict, **{k: v for k, v in data.items() if k in own})
