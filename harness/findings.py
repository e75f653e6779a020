"""The one store of findings: `harness/targets/<package>/findings/<target>.toml`, one data file per target.

Each `[[failure]]` entry is one finding of one check × family on that target:

    check, family   where it fails ("*" as family: every family of the check; "*" as check: every check on
                    the family, for a failure before any check's property runs, such as its model not building)
    also            optional: other checks on which the same defect shows, with the same signature (matched
                    there too; the pin and the reproducer belong to `check`)
    signature       a regular expression searched in the failing verdict's counterexample (see
                    `counterexample_text`): a different failure of the same check × family does not match, so
                    it is reported as new instead of hidden as known
    reason          one line: what is wrong
    reproducer      standalone Python that shows the defect by raising (non-zero exit) while it is present
    expected        true: a seed bug the suite requires this (seed) target to fail on; never masked as known
    regression      true: a pin-only entry whose finding is fixed; its pin keeps it fixed
    [failure.pin]   optional: the counterexample as data, `kind` naming its builder in `harness.pins`

A plain entry (neither expected nor regression) is a known failure: its verdict reads KNOWN, not FAIL.
This module reads the files and matches signatures; it imports nothing from the harness, so
`harness.targets.base` can use it. Building pinned examples is `harness.pins`'s job.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TARGETS_DIR = Path(__file__).resolve().parent / "targets"

_FIELDS = {"check", "family", "also", "signature", "reason", "reproducer", "expected", "regression", "pin"}


class FindingsError(ValueError):
    """A findings file that does not hold what `harness.findings` documents."""


@dataclass(frozen=True)
class Finding:
    """One entry of a target's findings file (see the module docstring)."""

    check: str
    family: str
    reason: str
    signature: str = ""
    reproducer: str = ""
    expected: bool = False
    regression: bool = False
    pin: Mapping[str, Any] | None = field(default=None, compare=False)
    target: str = ""
    also: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """A known failure: its failing verdicts read KNOWN."""
        return not (self.expected or self.regression)

    def covers(self, check: str, family: str) -> bool:
        return (self.check in (check, "*") or check in self.also) and self.family in (family, "*")

    def matches(self, counterexample: Any = None) -> bool:
        """Whether a failure showing `counterexample` is this finding (None or empty, as a passing verdict
        has: any failure of its case, so a known failure that passes is found stale)."""
        if not counterexample or not self.signature:
            return True
        return re.search(self.signature, counterexample_text(counterexample)) is not None


def counterexample_text(counterexample: Any) -> str:
    """The text a signature is searched in: a mapping (a verdict's counterexample) as `name=value` lines,
    nested values as Python writes them; anything else as `str` does."""
    if isinstance(counterexample, Mapping):
        return "\n".join(f"{name}={value}" for name, value in counterexample.items())
    return str(counterexample)


def _entry(path: Path, target: str, entry: dict[str, Any]) -> Finding:
    where = f"{path}: [[failure]] {entry.get('check')} × {entry.get('family')}"
    unknown = set(entry) - _FIELDS
    missing = {"check", "family", "reason"} - set(entry)
    if unknown or missing:
        raise FindingsError(f"{where}: unknown fields {sorted(unknown)}, missing {sorted(missing)}; "
                            f"an entry holds {sorted(_FIELDS)}")
    finding = Finding(target=target, **{**entry, "also": tuple(entry.get("also", ()))})
    if finding.expected and finding.regression:
        raise FindingsError(f"{where}: an entry is expected (fails) or a regression (passes), not both")
    if finding.regression and finding.pin is None:
        raise FindingsError(f"{where}: a regression entry keeps its finding fixed through a [failure.pin]")
    if not finding.regression and not (finding.signature and finding.reproducer):
        raise FindingsError(f"{where}: a failing entry needs a signature and a reproducer")
    try:
        re.compile(finding.signature)
    except re.error as exc:
        raise FindingsError(f"{where}: signature is not a regular expression: {exc}") from exc
    if finding.pin is not None and "kind" not in finding.pin:
        raise FindingsError(f"{where}: [failure.pin] names its builder with `kind`")
    return finding


def read_findings(path: Path) -> tuple[Finding, ...]:
    """Every entry of one findings file (its stem is the target's name); none when it does not exist."""
    if not path.exists():
        return ()
    data = tomllib.loads(path.read_text())
    return tuple(_entry(path, path.stem, entry) for entry in data.get("failure", []))


def finding_files() -> dict[str, Path]:
    """The built-in targets' findings files by target name."""
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*/findings/*.toml"))}


@cache
def all_findings() -> tuple[Finding, ...]:
    """Every entry of every built-in target's findings file."""
    return tuple(f for path in finding_files().values() for f in read_findings(path))


def findings_for(target: str) -> tuple[Finding, ...]:
    return tuple(f for f in all_findings() if f.target == target)


def expected_failures(target: str, check: str, family: str) -> tuple[Finding, ...]:
    """The seed bugs the suite requires `target` to fail on in check × family."""
    return tuple(f for f in findings_for(target) if f.expected and f.covers(check, family))


def load_known_failures(package_file: str, target_name: str) -> list[Finding]:
    """The known failures of `findings/<target_name>.toml` beside the target package whose `__init__` is
    `package_file` (expected and regression entries are not known failures)."""
    path = Path(package_file).parent / "findings" / f"{target_name}.toml"
    return [f for f in read_findings(path) if f.known]
