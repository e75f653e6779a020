"""`moe-harness replay`: re-run every stored failing case on its stored examples and say what became of it.

Per case: FIXED (its stored examples pass now, or Hypothesis has already dropped them after they
passed), FAILED (a stored example still fails; the fresh bug report comes with it) or ERROR (the case
cannot run here: its target does not load, its check is gone, or its examples no longer decode).
Pruning removes the records and stored examples of FIXED cases only.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.checks import CHECKS
from harness.database import Record, RegressionStore
from harness.engine import execute
from harness.families import get_family
from harness.outcome import CaseResult
from harness.targets import TargetLoadError, TargetUnavailable, UnknownTarget, load_target
from harness.verdict import FAIL, KNOWN, PASS, SKIP

FIXED, FAILED, ERROR = "FIXED", "FAILED", "ERROR"


@dataclass
class Replayed:
    record: Record
    origins: tuple[str, ...]  # where the record lies: "local", "shared"
    outcome: str  # FIXED, FAILED or ERROR
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
    def done(outcome: str, detail: str, result: CaseResult | None = None, known: bool = False) -> Replayed:
        return Replayed(record, origins, outcome, detail, result, known)

    try:
        target = load_target(record.target_spec)
    except (UnknownTarget, TargetUnavailable, TargetLoadError) as exc:
        return done(ERROR, f"target {record.target_spec!r} does not load: {exc}")
    if target.name != record.target:
        return done(ERROR, f"{record.target_spec!r} now loads a target named {target.name!r}, not {record.target!r}")
    if record.check not in CHECKS:
        return done(ERROR, f"no check named {record.check!r} any more; valid checks: {', '.join(CHECKS)}")
    stored = store.stored_examples(record.key)
    if stored == 0:
        return done(FIXED, "no stored example left: a run since found it passing and dropped it")
    result = execute(CHECKS[record.check], target, get_family(record.family), profile="repro",
                     seed=record.seed, store=store, spec=record.target_spec)
    v = result.verdict
    if v.status in (FAIL, KNOWN):
        return done(FAILED, v.message, result, known=v.status == KNOWN)
    if v.status == PASS:
        return done(FIXED, f"{v.examples} stored example(s) pass now", result)
    if v.status == SKIP:
        return done(ERROR, f"none of the {stored} stored example(s) could be replayed: they no longer decode "
                           "for this check's strategy, or for this Hypothesis version", result)
    return done(ERROR, v.message, result)


def prune(store: RegressionStore, replayed: list[Replayed]) -> list[Record]:
    """Remove the records and stored examples of the FIXED cases, from the local and shared directories."""
    fixed = [r.record for r in replayed if r.outcome == FIXED]
    for record in fixed:
        store.remove(record)
    return fixed
