"""junit.xml: one <testcase> per target × check × family, in the shape CI systems read.

A new failure is a <failure> holding the bug report; a harness error an <error>; skips, known and
expected failures are <skipped> with the reason (so they never turn a CI page red). Cases that failed the
same way on several families (one bug, see `Report.bugs`) are one <testcase> named by all their families.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from harness.outcome import CaseResult
from harness.reports.document import NEW_FAIL, Report, column, column_counts
from harness.reports.text import render_failure
from harness.verdict import Status


def render(report: Report) -> str:
    by_target: dict[str, list[CaseResult]] = defaultdict(list)
    for r in report.results:
        by_target[r.verdict.target].append(r)
    versions = {t.name: t.version for t in report.targets}
    # A bug's other cases fold into its first one.
    folded = {id(r): bug[1:] for bug in report.bugs() for r in bug[:1]}
    dropped = {id(r) for others in folded.values() for r in others}
    by_target = {t: [r for r in results if id(r) not in dropped] for t, results in by_target.items()}
    totals = column_counts([r for results in by_target.values() for r in results])
    root = ET.Element("testsuites", name="moe-harness", tests=str(sum(totals.values())),
                      failures=str(totals[NEW_FAIL]), errors=str(totals[Status.ERROR]),
                      skipped=str(totals[Status.SKIP] + totals[Status.KNOWN]), time=f"{report.run.seconds:.3f}")
    for target, results in by_target.items():
        counts = column_counts(results)
        suite = ET.SubElement(root, "testsuite", name=target, tests=str(len(results)),
                              failures=str(counts[NEW_FAIL]), errors=str(counts[Status.ERROR]),
                              skipped=str(counts[Status.SKIP] + counts[Status.KNOWN]),
                              time=f"{sum(r.verdict.seconds for r in results):.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="target_version", value=versions.get(target, ""))
        ET.SubElement(props, "property", name="profile", value=report.run.profile)
        ET.SubElement(props, "property", name="seed", value=str(report.run.seed))
        for r in results:
            _testcase(suite, r, folded.get(id(r), []))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(suite: ET.Element, r: CaseResult, same_bug: list[CaseResult]) -> None:
    """`r`'s test case; with `same_bug` (cases failing exactly as `r` on other families) one for all of them."""
    v = r.verdict
    others = [o.verdict.family for o in same_bug]
    testcase = ET.SubElement(suite, "testcase", classname=f"moe-harness.{v.target}.{v.check}",
                             name=",".join((v.family, *others)),
                             time=f"{v.seconds + sum(o.verdict.seconds for o in same_bug):.3f}")
    col = column(r)
    if col == NEW_FAIL:
        ET.SubElement(testcase, "failure", message=v.message, type=v.kind or "").text = render_failure(
            v, r.blob, others=others)
    elif col == Status.ERROR:
        ET.SubElement(testcase, "error", message=v.message, type=v.kind or "").text = render_failure(
            v, r.blob, others=others)
    elif col == Status.KNOWN:
        ET.SubElement(testcase, "skipped", message=f"known failure: {v.known_reason or 'expected by the suite'}")
    elif col == Status.SKIP:
        ET.SubElement(testcase, "skipped", message=v.message)
    if r.stale:
        ET.SubElement(testcase, "system-out").text = v.message
    elif r.unconfirmed:
        ET.SubElement(testcase, "system-out").text = f"unconfirmed known failure: {r.unconfirmed}"
