"""The adapter examples of README's "Point it at your engine": each one, written out as a module, runs through
the CLI exactly as the README shows it and passes, with its cases run (not skipped)."""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli import EXIT_OK
from harness.targets.base import CAPABILITIES, Target

README = Path(__file__).resolve().parent.parent / "README.md"
# An example: the marker naming the CLI arguments it runs with, its python block, then the prose up to the next
# example or heading (where the README shows the command line).
_EXAMPLE = re.compile(r"<!-- adapter: (?P<args>[^>]*?) -->\n```python\n(?P<source>.*?)```\n"
                      r"(?P<after>.*?)(?=<!-- adapter:|\n#+ |\Z)", re.S)
_SUMMARY = re.compile(r"^summary: .*$", re.M)


@dataclass(frozen=True)
class Example:
    """One marked adapter example: its CLI arguments (besides --target), its module source, the text after it."""

    args: tuple[str, ...]
    source: str
    after: str

    @property
    def id(self) -> str:
        return "+".join(self.args[i + 1] for i, a in enumerate(self.args) if a == "--check")

    @property
    def module(self) -> str:
        return "readme_adapter_" + re.sub(r"\W", "_", self.id)


def readme_examples() -> list[Example]:
    """Every marked adapter example of the README, in order."""
    found = _EXAMPLE.finditer(README.read_text())
    return [Example(tuple(shlex.split(m["args"])), m["source"], m["after"]) for m in found]


EXAMPLES = readme_examples()


def _write(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example as the module `example.module` in tmp_path, first on sys.path, not imported yet."""
    (tmp_path / f"{example.module}.py").write_text(example.source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(example.module, None)


def _load(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    """The example's target, from its module written into tmp_path (and forgotten after)."""
    _write(example, tmp_path, monkeypatch)
    try:
        return importlib.import_module(example.module).make_target()  # type: ignore[no-any-return]
    finally:
        sys.modules.pop(example.module, None)  # no module of one test's tmp_path outlives it


def _counts(summary: str) -> dict[str, int]:
    """`{"passed": n, "skipped": m}` from the summary line's counts (a word it does not show is absent)."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped)\b", summary)}


def test_the_readme_marks_an_example_for_every_capability(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offered = {cap for example in EXAMPLES for cap in _load(example, tmp_path, monkeypatch).capabilities()}
    assert offered == set(CAPABILITIES), f"capabilities with no README example: {set(CAPABILITIES) - offered}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_shows_the_command_it_marks(example: Example) -> None:
    shown = re.search(r"moe-harness run --target \S+:make_target (.*)", example.after)
    assert shown is not None, f"no `moe-harness run --target ...` line after the {example.id} example"
    assert tuple(shlex.split(shown[1])) == example.args, "the command shown differs from the marker's"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_adapter_passes_through_the_cli(example: Example, run, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(example, tmp_path, monkeypatch)
    try:
        code = run("run", "--target", f"{example.module}:make_target", *example.args, "--quiet")
    finally:
        sys.modules.pop(example.module, None)
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    summary = _SUMMARY.search(out)
    assert summary is not None, out
    counts = _counts(summary[0])
    assert counts.get("passed", 0) >= 1 and counts.get("skipped") == 0, summary[0]
