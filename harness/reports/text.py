"""Everything moe-harness prints to a terminal.

A run: one progress line per case as it ends, then the targets × checks matrix, known and stale failures,
one bug report per new failure, and a closing summary line (`moe-harness run` and `moe-harness report DIR`
print the same text). `moe-harness targets`: one entry per target. `moe-harness replay`: one line per
stored case, with a fresh bug report for each that still fails, and the counts.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.database import Record
from harness.outcome import CaseResult
from harness.pseudo_families import PSEUDO_FAMILIES
from harness.reports.document import COLUMNS, NEW_FAIL, Report, TargetInfo, column, column_counts
from harness.verdict import SkipKind, Status, Verdict

if TYPE_CHECKING:
    from harness.replay import Replayed

_LEGEND = "fail = new failure; known = listed in the target's known failures or expected by the suite"


def render_matrix(results: list[CaseResult]) -> str:
    """One row per target × check with counts per column (`.` for none), target and check each in its own
    aligned column."""
    cells: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for r in results:
        cells[(r.verdict.target, r.verdict.check)][column(r)] += 1
    t_width = max([len(t) for t, _ in cells] + [len("target")])
    c_width = max([len(c) for _, c in cells] + [len("check")])
    lines = [f"{'target':<{t_width}}  {'check':<{c_width}}  " + "  ".join(f"{s:>5}" for s in COLUMNS)]
    for (target, check), counts in cells.items():
        lines.append(f"{target:<{t_width}}  {check:<{c_width}}  "
                     + "  ".join(f"{counts[s] or '.':>5}" for s in COLUMNS))
    lines.append(f"({_LEGEND})")
    return "\n".join(lines)


def render_families(results: list[CaseResult]) -> str:
    """Per target × check, the families in each column: which families passed, failed, were skipped."""
    rows: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        rows[(r.verdict.target, r.verdict.check)][column(r)].append(r.verdict.family)
    lines = []
    for (target, check), by_column in rows.items():
        lines.append(f"{target}  {check}")
        lines += [f"    {col:>5}: {' '.join(by_column[col])}" for col in COLUMNS if by_column.get(col)]
    return "\n".join(lines)


def render_known(results: list[CaseResult]) -> str:
    """Known and expected failures, one line each; stale known-failure entries that pass now; and entries whose
    case was skipped or errored, so the run could not check them."""
    lines = []
    for r in results:
        v = r.verdict
        if column(r) == Status.KNOWN:
            why = v.known_reason if v.known_reason else "expected by the suite: " + v.message
            lines.append(f"KNOWN  {v.case_id}: {why}")
    for r in results:
        if r.stale:
            v = r.verdict
            lines.append(f"STALE  {v.case_id}: listed as a known failure but passes now; remove its entry from "
                         f"the findings/{v.target}.toml of its target package ({v.message})")
    for r in results:
        if r.unconfirmed:
            v = r.verdict
            lines.append(f"UNCONFIRMED  {v.case_id}: listed as a known failure ({r.unconfirmed}) but the case "
                         f"{'errored' if v.status == Status.ERROR else 'was skipped'} here, so the entry was not "
                         f"checked ({v.message})")
    return "\n".join(lines)


def render_failure(v: Verdict, blob: str | None = None, replay_options: str = "",
                   others: Sequence[str] = ()) -> str:
    """One failure as a bug report: property, target, family, counterexample, tolerance, reproducer; the replay
    line carries `replay_options` (the run's --db / --regressions, when not the defaults). `others`: the other
    families that failed exactly the same way (one bug), each replayed by the same command with its --family."""
    also = f" +{len(others)} more families" if others else ""
    lines = [
        f"{'FAIL' if v.status == Status.FAIL else 'ERROR'} {v.case_id}{also}  [{v.kind}]",
        f"  property:  {v.check}",
        f"  target:    {v.target}",
        f"  family:    {', '.join((v.family, *others))}",
        f"  what:      {v.message}",
    ]
    if v.counterexample:
        lines.append("  minimal counterexample:")
        lines += [f"    {k}: {json.dumps(val, default=str)}" for k, val in v.counterexample.items()]
    lines.append(f"  tolerance: {v.tolerance or 'exact'}")
    if v.reproduce:
        lines.append(f"  reproduce: {v.reproduce}")
        if others:
            lines.append(f"             (the other families: the same command with --family {' | '.join(others)})")
    if v.status == Status.FAIL:
        lines.append(f"  replay the stored example: moe-harness replay '{v.case_id}'{replay_options}")
    if blob:
        lines.append(f"  hypothesis: {blob}")
    return "\n".join(lines)


def render_totals(results: list[CaseResult], bugs: int | None = None) -> str:
    """The closing line: cases, the model families and checks of the matrix, then the count in each column
    (with `bugs`, how many distinct bug reports the new failures and errors make)."""
    counts = column_counts(results)
    families = len({r.verdict.family for r in results} - set(PSEUDO_FAMILIES))
    checks = len({r.verdict.check for r in results})
    reports = counts[NEW_FAIL] + counts[Status.ERROR]
    distinct = f" ({_n(bugs, 'bug report')})" if bugs is not None and bugs < reports else ""
    return (f"summary: {_n(len(results), 'case')} over {_n(families, 'model family', 'model families')} and "
            f"{_n(checks, 'check')}: {counts[Status.PASS]} passed, {_n(counts[NEW_FAIL], 'new failure')}, "
            f"{_n(counts[Status.KNOWN], 'known failure')}, {_n(counts[Status.ERROR], 'error')}{distinct}, "
            f"{counts[Status.SKIP]} skipped{_skip_kinds(results)}")


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _skip_kinds(results: list[CaseResult]) -> str:
    """` (N not applicable, M harness limit[, K unclassified])` for the skipped cases, or "" when none."""
    kinds = Counter(r.verdict.skip_kind for r in results if r.verdict.status == Status.SKIP)
    if not kinds:
        return ""
    parts = [f"{kinds[kind]} {kind.replace('-', ' ')}" for kind in SkipKind if kinds[kind]]
    parts += [f"{kinds[None]} unclassified"] if kinds[None] else []
    return f" ({', '.join(parts)})"


def render_not_offered(report: Report) -> str:
    """One line per target that lacks the capability of some check the run left out for it (the checks were
    not named, so no not-applicable case was made)."""
    lacking: dict[str, list[str]] = defaultdict(list)
    for spec, check in report.run.not_offered:
        lacking[spec].append(check)
    return "\n".join(f"NOT OFFERED target {spec}: no capability for {', '.join(checks)} (no cases made)"
                     for spec, checks in lacking.items())


def render_report(report: Report, families: bool = False, replay_options: str = "") -> str:
    """Everything after the progress lines: matrix, unavailable targets, known, bug reports (their replay lines
    with `replay_options`), summary."""
    parts = [render_matrix(report.results)]
    if families:
        parts.append(render_families(report.results))
    elsewhere = [t for t in report.targets if t.environment and t.status == "loaded"]
    if elsewhere:
        parts.append("\n".join(f"ENV    target {t.spec} ran in its own environment {t.environment} ({t.version})"
                               for t in elsewhere))
    missing = [t for t in report.targets if t.status != "loaded"]
    if missing:
        parts.append("\n".join(f"{'ERROR' if t.status == 'error' else 'SKIP'}   target {t.spec}: {t.reason}"
                               for t in missing))
    not_offered = render_not_offered(report)
    if not_offered:
        parts.append(not_offered)
    known = render_known(report.results)
    if known:
        parts.append(known)
    parts += [render_failure(bug[0].verdict, bug[0].blob, replay_options, [r.verdict.family for r in bug[1:]])
              for bug in report.bugs()]
    parts.append(f"{render_totals(report.results, len(report.bugs()))}\nseed {report.run.seed} (profile {report.run.profile}): "
                 f"--seed {report.run.seed} draws the same inputs again")
    if report.run.interrupted:
        parts.append(f"INTERRUPTED: {len(report.results)} of {report.run.planned} cases finished before Ctrl-C; "
                     "the rest did not run")
    return "\n\n".join(parts)


class Progress:
    """Prints a progress line per case as it ends (unless quiet), counting the cases done, the failures so far
    and the cases planned (which grow when a target running in its own environment says how many it has)."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total, self.quiet, self.done, self.failures = total, quiet, 0, 0

    def grow(self, cases: int) -> None:
        self.total += cases

    def show(self, result: CaseResult) -> None:
        self.done += 1
        self.failures += result.verdict.status in (Status.FAIL, Status.ERROR)
        if not self.quiet:
            print(render_progress(self.done, max(self.total, self.done), result, self.failures), flush=True)


def render_progress(done: int, total: int, result: CaseResult, failures: int) -> str:
    """The line printed as a case ends: how far the run is, the case's status, and the failures so far; every
    status but pass ends with its reason (a failure's first line, truncated)."""
    v = result.verdict
    shrinking = ", shrinking included" if result.stats.get("shrink", {}).get("calls") else ""
    line = (f"[{done}/{total}] {column(result).upper():5} {v.case_id} "
            f"({v.examples} examples{shrinking}, {v.seconds:.2f}s; failures so far: {failures})")
    reason = _reason(result)
    return f"{line} - {reason}" if reason else line


def _reason(result: CaseResult) -> str:
    """Why a case did not pass, on one line: a skip's kind and reason, a known failure's entry, a failure's
    kind and message; "" for a pass."""
    v = result.verdict
    if column(result) == Status.KNOWN:
        why = v.known_reason or f"expected by the suite: {v.message}"
        return f"known: {_one_line(why)}"
    if v.status == Status.SKIP:
        return f"{v.skip_kind or 'unclassified'}: {v.message}"
    if v.status in (Status.FAIL, Status.ERROR):
        return f"{v.kind}: {_one_line(v.message)}"
    return ""


def _one_line(text: str, width: int = 160) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= width else first[: width - 3] + "..."


def render_written(paths: Sequence[Path], heading: str = "report written") -> str:
    """The line naming the report files a run wrote (the pytest plugin heads it with its own name)."""
    return f"{heading}: {', '.join(map(str, paths))}"


def render_targets(infos: list[TargetInfo]) -> str:
    """Per target: spec, version and capabilities with its description below, or why it did not load."""
    lines = []
    for i in infos:
        if i.status == "loaded":
            lines.append(f"{i.spec:18} {i.version:18} {', '.join(i.capabilities)}")
            lines.append(f"{'':18} {i.description}")
        else:
            lines.append(f"{i.spec:18} {i.status}: {i.reason}")
    return "\n".join(lines)


def render_replayed(replayed: list[Replayed]) -> str:
    """One line per replayed case, the bug report of each that still fails (new, not known), then the counts."""
    from harness.replay import ReplayOutcome  # replaying runs cases (torch): rendering a report does not
    lines = []
    for r in replayed:
        known = " (now a known failure)" if r.known else ""
        lines.append(f"{r.outcome:6} {r.record.case_id}{known}  [{'+'.join(r.origins)}]: {r.detail}")
        if r.outcome == ReplayOutcome.FAILED and r.result is not None and not r.known:
            # The record's reproducer: the profile and seed that found it, not replay's repro profile.
            verdict = replace(r.result.verdict, reproduce=r.record.reproduce)
            lines += ["       " + line for line in render_failure(verdict, r.result.blob).splitlines()]
    counts = {o: sum(r.outcome == o for r in replayed) for o in ReplayOutcome}
    lines.append(f"{len(replayed)} stored cases: " + ", ".join(f"{n} {o.lower()}" for o, n in counts.items()))
    return "\n".join(lines)


def render_pruned(pruned: list[Record]) -> str:
    """What `replay --prune` removed: the count, then one case id a line."""
    return f"pruned {len(pruned)} fixed case(s)" + "".join(f"\n  {rec.case_id}" for rec in pruned)
