"""Render verdicts for people: a targets × checks matrix and one bug report per failure."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from harness.verdict import ERROR, FAIL, KNOWN, PASS, SKIP, Verdict

_ORDER = (PASS, FAIL, KNOWN, ERROR, SKIP)


def render_summary(verdicts: list[Verdict]) -> str:
    """A matrix with one row per target × check: counts of pass / fail / known / error / skip."""
    cells: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for v in verdicts:
        cells[(v.target, v.check)][v.status] += 1
    width = max([len(f"{t}  {c}") for t, c in cells] + [20])
    lines = [f"{'target  check':<{width}}  " + "  ".join(f"{s:>5}" for s in _ORDER)]
    for (target, check), counts in cells.items():
        lines.append(f"{f'{target}  {check}':<{width}}  " + "  ".join(f"{counts[s] or '.':>5}" for s in _ORDER))
    total = Counter(v.status for v in verdicts)
    lines.append(f"{len(verdicts)} cases: " + ", ".join(f"{total[s]} {s}" for s in _ORDER))
    stale = [v.case_id for v in verdicts if v.message.startswith("stale known failure")]
    if stale:
        lines.append("stale known failures (now passing): " + ", ".join(stale))
    return "\n".join(lines)


def render_failure(v: Verdict) -> str:
    """One failure as a bug report: property, target, family, counterexample, tolerance, reproducer."""
    lines = [
        f"{'FAIL' if v.status == FAIL else 'ERROR'} {v.case_id}  [{v.kind}]",
        f"  property:  {v.check}",
        f"  target:    {v.target}",
        f"  family:    {v.family}",
        f"  what:      {v.message}",
    ]
    if v.counterexample:
        lines.append("  minimal counterexample:")
        lines += [f"    {k}: {json.dumps(val, default=str)}" for k, val in v.counterexample.items()]
    lines.append(f"  tolerance: {v.tolerance or 'exact'}")
    lines.append(f"  reproduce: {v.reproduce}")
    return "\n".join(lines)
