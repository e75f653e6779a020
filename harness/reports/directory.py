"""The report directory (`--report-dir`): report.json (all of it, as data), report.md (the matrix and
bug reports for a CI summary page) and junit.xml (one test case per target × check × family)."""

from __future__ import annotations

from pathlib import Path

from harness.reports import junit, markdown
from harness.reports.document import Report

FILES = ("report.json", "report.md", "junit.xml")


def write_report_dir(report: Report, directory: Path) -> list[Path]:
    """Write the three files into `directory` (created if missing); returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = (report.to_json(), markdown.render(report), junit.render(report))
    paths = [directory / name for name in FILES]
    for path, text in zip(paths, texts, strict=True):
        path.write_text(text)
    return paths


def load_report(directory: Path) -> Report:
    """The Report saved in `directory`; FileNotFoundError names the file it looked for."""
    path = directory / FILES[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a directory written by `moe-harness run --report-dir`")
    return Report.from_json(path.read_text())
