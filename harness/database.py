"""The regression database: Hypothesis's failing examples per case, each with a record a person can read.

Two directories share one layout:

    <dir>/examples/   Hypothesis's DirectoryBasedExampleDatabase (opaque bytes; needs the pinned Hypothesis)
    <dir>/records/    one JSON file per failing case: target and versions, check, family, counterexample,
                      reproducer; what a person reads and what `moe-harness replay` runs

- local (default `.hypothesis/moe-harness`, gitignored): every run reads and writes it.
- shared (default `cases/regressions`, committed): every run reads it; it changes only through
  `promote` (the nightly profile, for new failures) and `remove` (`replay --prune`).

Hypothesis sees MultiplexedDatabase(local, ReadOnlyDatabase(shared)), so a failure found anywhere is
replayed first everywhere, and no ordinary run edits the committed directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

from harness.outcome import CaseResult
from harness.verdict import ErrorKind
from harness.versions import library_versions

# Both relative to the current directory, the checkout's root (as Hypothesis's own `.hypothesis/` is).
SHARED_DIR = Path("cases") / "regressions"
LOCAL_DIR = Path(".hypothesis") / "moe-harness"

# Hypothesis files a case's examples under these sub-keys besides the key itself.
_SUB_KEYS = (b"", b".secondary", b".pareto")


def case_key(check: str, target: str, family: str) -> bytes:
    """The Hypothesis database key of a case: fixed by its names alone, so edits to the harness's code
    (which Hypothesis's default, source-derived key would follow) never orphan stored examples."""
    return f"moe-harness:{check}:{target}:{family}".encode()


@dataclass
class Record:
    """One failing case as a person reads it, and as `replay` re-runs it."""

    check: str
    target: str
    target_spec: str
    family: str
    target_version: str
    kind: ErrorKind | None
    message: str
    counterexample: dict[str, Any]
    tolerance: str | None
    reproduce: str
    profile: str
    seed: int
    versions: dict[str, str] = field(default_factory=dict)
    blob: str | None = None
    found: str = ""

    def __post_init__(self) -> None:
        self.kind = None if self.kind is None else ErrorKind(self.kind)  # a plain string when read from JSON

    @classmethod
    def of(cls, result: CaseResult, profile: str, seed: int) -> Record:
        """The record of a failing result found under `profile` and `seed`."""
        v = result.verdict
        return cls(check=v.check, target=v.target, target_spec=result.spec or v.target, family=v.family,
                   target_version=result.target_version, kind=v.kind, message=v.message,
                   counterexample=v.counterexample, tolerance=v.tolerance, reproduce=v.reproduce,
                   profile=profile, seed=seed, versions=library_versions(), blob=result.blob)

    @property
    def case_id(self) -> str:
        return f"{self.check}[{self.target}-{self.family}]"

    @property
    def key(self) -> bytes:
        return case_key(self.check, self.target, self.family)

    @property
    def filename(self) -> str:
        return re.sub(r"[^\w.-]+", "_", f"{self.check}__{self.target}__{self.family}") + ".json"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RegressionStore:
    """The local and shared directories of one run (plain paths, so it pickles to worker processes).

    `promote_new` makes every new failure also land in the shared directory (the nightly profile);
    `record_failures` False leaves writing records to the caller (the pytest plugin writes them only
    for failures the suite did not expect; replay never rewrites them).
    """

    local: Path = LOCAL_DIR
    shared: Path = SHARED_DIR
    promote_new: bool = False
    record_failures: bool = True

    def hypothesis_database(self) -> ExampleDatabase:
        """What Hypothesis reads and writes: the local database, with the shared one read-only."""
        return MultiplexedDatabase(_examples(self.local), ReadOnlyDatabase(_examples(self.shared)))

    def stored_examples(self, key: bytes) -> int:
        """How many failing examples either directory holds under `key`."""
        return len(set(self.hypothesis_database().fetch(key)))

    def save(self, record: Record) -> None:
        """Keep `record` in the local directory, and promote it when this store promotes new failures."""
        _write_record(self.local, record)
        if self.promote_new:
            self.promote(record)

    def promote(self, record: Record) -> Path:
        """Copy the case's failing examples from the local database into the shared one, with its record."""
        shared = _examples(self.shared)
        for value in _examples(self.local).fetch(record.key):
            shared.save(record.key, value)
        return _write_record(self.shared, record)

    def records(self) -> list[tuple[Record, tuple[str, ...]]]:
        """Every stored record with where it lies ("local", "shared"), one per case, in case-id order."""
        found: dict[str, tuple[Record, list[str]]] = {}
        for origin, root in (("shared", self.shared), ("local", self.local)):
            for path in sorted((root / "records").glob("*.json")):
                record = _read_record(path)
                if record is not None:
                    found.setdefault(record.case_id, (record, []))[1].append(origin)
        return [(rec, tuple(origins)) for _, (rec, origins) in sorted(found.items())]

    def remove(self, record: Record) -> None:
        """Delete the case's record and stored examples from both directories."""
        for root in (self.local, self.shared):
            (root / "records" / record.filename).unlink(missing_ok=True)
            db = _examples(root)
            for sub in _SUB_KEYS:
                for value in list(db.fetch(record.key + sub)):
                    db.delete(record.key + sub, value)


def _examples(root: Path) -> DirectoryBasedExampleDatabase:
    return DirectoryBasedExampleDatabase(root / "examples")


def _read_record(path: Path) -> Record | None:
    """The record stored at `path`, or None (with one line on stderr) when it cannot be read or parsed: a
    damaged record must not stop a run or a replay of the others."""
    try:
        return Record.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"moe-harness: skipping unreadable regression record {path}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return None


def _write_record(root: Path, record: Record) -> Path:
    """Write `record` under `root` atomically (a temporary file renamed over it): processes saving the same
    case at once each leave a whole record, never a torn one. OSError when `root` cannot be written."""
    path = root / "records" / record.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = _read_record(path) if path.exists() else None
    if previous is not None:  # keep when the case first failed; the rest describes the latest failure
        record.found = previous.found or record.found
    record.found = record.found or datetime.now(UTC).isoformat(timespec="seconds")
    fd, temporary = tempfile.mkstemp(prefix=f".{record.filename}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(record.to_json())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
