"""report.md: the run as a CI summary page renders it (GitHub-flavoured Markdown, no HTML)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from harness.outcome import CaseResult
from harness.reports.document import COLUMNS, Report, column
from harness.verdict import Status


def render(report: Report) -> str:
    """Header with versions, targets, the targets × checks matrix and each family's row of it, new failures,
    known, stale, skips."""
    run, totals = report.run, report.totals()
    headline = ", ".join(f"{totals[c]} {c}" for c in COLUMNS)
    lines = [
        "# moe-harness report",
        "",
        f"`{run.command}`: profile **{run.profile}**, seed {run.seed}, "
        f"{len(report.results)} cases in {run.seconds:.1f} s on {run.workers} worker(s): {headline}.",
        "",
        " · ".join(f"{name} {version}" for name, version in run.versions.items()),
        "",
        "## Targets",
        "",
        "| target | version | capabilities | status |",
        "|---|---|---|---|",
    ]
    for t in report.targets:
        status = t.status if t.status == "loaded" else f"{t.status}: {t.reason}"
        lines.append(f"| `{t.spec}` | {t.version} | {', '.join(t.capabilities)} | {_cell(status)} |")
    lines += ["", "## Matrix", "", *_matrix(report), ""]
    if len({r.verdict.family for r in report.results}) > 1:
        lines += ["## By family", "", *_by_family(report), ""]
    bugs = report.bugs()
    cases = sum(map(len, bugs))
    lines += [f"## New failures and errors ({len(bugs)} bug reports over {cases} cases)", ""]
    lines += [_bug_report(bug) for bug in bugs] or ["None.", ""]
    known = report.known_failures()
    if known:
        lines += ["## Known failures", "", "| case | reason |", "|---|---|"]
        lines += [f"| `{r.verdict.case_id}` | {_cell(r.verdict.known_reason or 'expected by the suite')} |"
                  for r in known]
        lines.append("")
    stale = report.stale()
    if stale:
        lines += ["## Stale known failures (they pass now: remove the entries)", ""]
        lines += [f"- `{r.verdict.case_id}`: {r.verdict.message}" for r in stale]
        lines.append("")
    unconfirmed = report.unconfirmed()
    if unconfirmed:
        lines += ["## Unconfirmed known failures (their case was skipped or errored here)", ""]
        lines += [f"- `{r.verdict.case_id}` ({r.verdict.status}): {r.unconfirmed}. {r.verdict.message}"
                  for r in unconfirmed]
        lines.append("")
    skips = Counter((r.verdict.skip_kind or "unclassified", r.verdict.message) for r in report.results
                    if r.verdict.status == Status.SKIP)
    if skips:
        lines += ["## Skipped", "", "| cases | kind | reason |", "|---|---|---|"]
        lines += [f"| {n} | {kind} | {_cell(reason)} |" for (kind, reason), n in skips.most_common()]
        lines.append("")
    return "\n".join(lines)


def _matrix(report: Report) -> list[str]:
    checks = list(dict.fromkeys(r.verdict.check for r in report.results))
    cells: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in report.results:
        cells[(r.verdict.target, r.verdict.check)][column(r)] += 1
    rows = ["| target | " + " | ".join(checks) + " |", "|---|" + "---|" * len(checks)]
    for target in dict.fromkeys(r.verdict.target for r in report.results):
        counts = [cells.get((target, check), Counter()) for check in checks]
        rows.append(f"| {target} | " + " | ".join(_counts(c) for c in counts) + " |")
    return rows


def _by_family(report: Report) -> list[str]:
    """One row per target × family: each check's outcome there (– where it had no case)."""
    checks = list(dict.fromkeys(r.verdict.check for r in report.results))
    outcome = {(r.verdict.target, r.verdict.family, r.verdict.check): column(r) for r in report.results}
    rows = ["| target | family | " + " | ".join(checks) + " |", "|---|---|" + "---|" * len(checks)]
    for target, family in dict.fromkeys((r.verdict.target, r.verdict.family) for r in report.results):
        cells = [outcome.get((target, family, check), "–") for check in checks]
        rows.append(f"| {target} | `{family}` | " + " | ".join(f"**{c}**" if c in (Status.FAIL, Status.ERROR) else c
                                                            for c in cells) + " |")
    return rows


def _counts(counts: Counter[str]) -> str:
    if not counts:
        return "–"
    return ", ".join(f"**{counts[c]} {c}**" if c in (Status.FAIL, Status.ERROR) else f"{counts[c]} {c}"
                     for c in COLUMNS if counts[c])


def _bug_report(bug: list[CaseResult]) -> str:
    """One bug (a new failure or error, on every family of `bug` alike) as a Markdown section: what, where,
    the counterexample, the reproducer of each family."""
    r = bug[0]
    v = r.verdict
    label = "FAIL" if v.status == Status.FAIL else "ERROR"
    families = ", ".join(f"`{m.verdict.family}`" for m in bug)
    also = f" and {len(bug) - 1} more families" if len(bug) > 1 else ""
    out = [f"### {label} `{v.case_id}`{also} ({v.kind})", "", f"**{_cell(v.message)}**", "",
           f"- property: `{v.check}`", f"- target: `{v.target}`", f"- famil{'ies' if len(bug) > 1 else 'y'}: {families}",
           f"- tolerance: {v.tolerance or 'exact'}", ""]
    if v.counterexample:
        out += ["Minimal counterexample:", "", "```json", json.dumps(v.counterexample, indent=2, default=str), "```", ""]
    out += ["Reproduce with:", "", "```sh", *(m.verdict.reproduce for m in bug), "```", ""]
    if r.blob:
        out += [f"Hypothesis: `{r.blob}`", ""]
    return "\n".join(out)


def _cell(text: str) -> str:
    """Text safe inside a table cell: no pipes, no line breaks."""
    return text.replace("|", "\\|").replace("\n", " ")
