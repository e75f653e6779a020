"""`moe-harness replay`: re-run every stored failing case on its stored examples and say what became of it.

Per case: FIXED (its stored examples pass now, or Hypothesis has already dropped them after they
passed), FAILED (a stored example still fails; the fresh bug report comes with it) or ERROR (the case
cannot run here: its target does not load, its check is gone, or its examples no longer decode).
Pruning removes the records and stored examples of FIXED cases only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from harness.checks import CHECKS
from harness.database import Record, RegressionStore
from harness.engine import execute
from harness.families import get_family
from harness.outcome import CaseResult
from harness.targets import TargetLoadError, TargetUnavailable, UnknownTarget, load_target
from harness.verdict import Status


class ReplayOutcome(StrEnum):
    """What became of one stored failing case (not a run's Status: a replay asks whether it still fails)."""

    FIXED = "FIXED"
    FAILED = "FAILED"
    ERROR = "ERROR"


@dataclass
class Replayed:
    """One stored case replayed: its record, where the record lies, what became of it and why."""

    record: Record
    origins: tuple[str, ...]  # where the record lies: "local", "shared"
    outcome: ReplayOutcome
    detail: str
    result: CaseResult | None = None
    known: bool = False  # FAILED, but the target now lists it as a known failure


def replay(store: RegressionStore, case_ids: list[str] | None = None) -> list[Replayed]:
    """Replay every stored case (or those in `case_ids`) with the repro profile; nothing is generated.

    The store's shared directory stays read-only here: only `prune` edits it.
    """
    reading = RegressionStore(store.local, store.shared, promote_new=False, record_failures=False)
    out = []
    for record, origins in reading.records():
        if case_ids and record.case_id not in case_ids:
            continue
        out.append(_replay_one(reading, record, origins))
    return out


def _replay_one(store: RegressionStore, record: Record, origins: tuple[str, ...]) -> Replayed:
    def done(outcome: ReplayOutcome, detail: str, result: CaseResult | None = None, known: bool = False) -> Replayed:
        return Replayed(record, origins, outcome, detail, result, known)

    try:
        target = load_target(record.target_spec)
    except (UnknownTarget, TargetUnavailable, TargetLoadError) as exc:
        return done(ReplayOutcome.ERROR, f"target {record.target_spec!r} does not load: {exc}")
    if target.name != record.target:
        return done(ReplayOutcome.ERROR, f"{record.target_spec!r} now loads a target named {target.name!r}, not {record.target!r}")
    if record.check not in CHECKS:
        return done(ReplayOutcome.ERROR, f"no check named {record.check!r} any more; valid checks: {', '.join(CHECKS)}")
    stored = store.stored_examples(record.key)
    if stored == 0:
        return done(ReplayOutcome.FIXED, "no stored example left: a run since found it passing and dropped it")
    result = execute(CHECKS[record.check], target, get_family(record.family), profile="repro",
                     seed=record.seed, store=store, spec=record.target_spec)
    v = result.verdict
    if v.status in (Status.FAIL, Status.KNOWN):
        return done(ReplayOutcome.FAILED, v.message, result, known=v.status == Status.KNOWN)
    if v.status == Status.PASS:
        return done(ReplayOutcome.FIXED, f"{v.examples} stored example(s) pass now", result)
    if v.status == Status.SKIP:
        return done(ReplayOutcome.ERROR, f"none of the {stored} stored example(s) could be replayed: they no longer decode "
                           "for this check's strategy, or for this Hypothesis version", result)
    return done(ReplayOutcome.ERROR, v.message, result)


def prune(store: RegressionStore, replayed: list[Replayed]) -> list[Record]:
    """Remove the records and stored examples of the FIXED cases, from the local and shared directories."""
    fixed = [r.record for r in replayed if r.outcome == ReplayOutcome.FIXED]
    for record in fixed:
        store.remove(record)
    return fixed
