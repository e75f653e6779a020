"""junit.xml: one <testcase> per target × check × family, in the shape CI systems read.

A new failure is a <failure> holding the bug report; a harness error an <error>; skips, known and
expected failures are <skipped> with the reason (so they never turn a CI page red).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from harness.outcome import CaseResult
from harness.reports.document import COLUMNS, NEW_FAIL, Report, column
from harness.reports.text import render_failure
from harness.verdict import Status


def render(report: Report) -> str:
    by_target: dict[str, list[CaseResult]] = defaultdict(list)
    for r in report.results:
        by_target[r.verdict.target].append(r)
    versions = {t.name: t.version for t in report.targets}
    totals = report.totals()
    root = ET.Element("testsuites", name="moe-harness", tests=str(len(report.results)),
                      failures=str(totals[NEW_FAIL]), errors=str(totals[Status.ERROR]),
                      skipped=str(totals[Status.SKIP] + totals[Status.KNOWN]), time=f"{report.run.seconds:.3f}")
    for target, results in by_target.items():
        counts = dict.fromkeys(COLUMNS, 0)
        for r in results:
            counts[column(r)] += 1
        suite = ET.SubElement(root, "testsuite", name=target, tests=str(len(results)),
                              failures=str(counts[NEW_FAIL]), errors=str(counts[Status.ERROR]),
                              skipped=str(counts[Status.SKIP] + counts[Status.KNOWN]),
                              time=f"{sum(r.verdict.seconds for r in results):.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="target_version", value=versions.get(target, ""))
        ET.SubElement(props, "property", name="profile", value=report.run.profile)
        ET.SubElement(props, "property", name="seed", value=str(report.run.seed))
        for r in results:
            _testcase(suite, r)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(suite: ET.Element, r: CaseResult) -> None:
    v = r.verdict
    testcase = ET.SubElement(suite, "testcase", classname=f"moe-harness.{v.target}.{v.check}", name=v.family,
                         time=f"{v.seconds:.3f}")
    col = column(r)
    if col == NEW_FAIL:
        ET.SubElement(testcase, "failure", message=v.message, type=v.kind or "").text = render_failure(v, r.blob)
    elif col == Status.ERROR:
        ET.SubElement(testcase, "error", message=v.message, type=v.kind or "").text = render_failure(v, r.blob)
    elif col == Status.KNOWN:
        ET.SubElement(testcase, "skipped", message=f"known failure: {v.known_reason or 'expected by the suite'}")
    elif col == Status.SKIP:
        ET.SubElement(testcase, "skipped", message=v.message)
    if r.stale:
        ET.SubElement(testcase, "system-out").text = v.message
    elif r.unconfirmed:
        ET.SubElement(testcase, "system-out").text = f"unconfirmed known failure: {r.unconfirmed}"
