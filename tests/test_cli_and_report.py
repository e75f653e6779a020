"""The face: CLI exit codes, usage errors listing valid names, the report directory, re-rendering it."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from harness.checks import CHECKS
from harness.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, main
from harness.engine import execute
from harness.families import get_family
from harness.findings import Finding
from harness.outcome import CaseResult
from harness.reports import junit, markdown, text
from harness.reports.document import Report, RunInfo
from harness.reports.text import render_failure, render_known, render_matrix, render_totals
from harness.targets import load_target
from harness.verdict import ErrorKind, Status, Verdict


def test_buggy_seed_exits_1_with_a_replay_line(run, capsys) -> None:
    code = run("run", "--target", "seeds-buggy", "--check", "remap-idempotence", "--family", "gemma4", "--quiet")
    out = capsys.readouterr().out
    assert code == EXIT_VIOLATION
    assert ".moe.moe." in out and "reproduce: moe-harness run --target seeds-buggy" in out
    assert "summary: 1 case over 1 model family and 1 check: 0 passed, 1 new failure," in out


def test_reproducer_pasted_back_fails_the_same_way(run, capsys) -> None:
    run("run", "--target", "seeds-buggy", "--check", "expert-mapping", "--quiet")
    first = capsys.readouterr().out
    line = next(ln for ln in first.splitlines() if ln.strip().startswith("reproduce:"))
    argv = shlex.split(line.split("reproduce:", 1)[1])
    assert argv[0] == "moe-harness"
    assert run(*argv[1:], "--quiet") == EXIT_VIOLATION
    again = capsys.readouterr().out
    what = next(ln for ln in first.splitlines() if ln.strip().startswith("what:"))
    assert what in again


def test_fixed_seed_exits_0_and_progress_counts_cases(run, capsys) -> None:
    assert run("run", "--target", "seeds-fixed", "--check", "remap-idempotence", "--family", "gemma4") == EXIT_OK
    out = capsys.readouterr().out
    assert "[1/1] PASS  remap-idempotence[seeds-fixed-gemma4]" in out and "failures so far: 0" in out


def test_unknown_names_exit_2_and_list_valid_ones(run, capsys) -> None:
    assert run("run", "--target", "nope") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "valid targets" in err and "seeds-buggy" in err and "package.module:object" in err
    assert run("run", "--check", "nope") == EXIT_USAGE
    assert "valid checks" in capsys.readouterr().err
    assert run("run", "--family", "nope") == EXIT_USAGE
    assert "valid families: " in capsys.readouterr().err
    assert run("run", "--profile", "nope") == EXIT_USAGE
    assert "nightly" in capsys.readouterr().err
    assert run("run", "--workers", "-1") == EXIT_USAGE


def test_report_dir_holds_three_files_that_render(run, tmp_path, capsys) -> None:
    out_dir = tmp_path / "out"
    code = run("run", "--target", "seeds-buggy", "--target", "reference", "--check", "expert-mapping",
               "--check", "capturer-shape", "--family", "gemma4", "--report-dir", str(out_dir), "--quiet")
    assert code == EXIT_VIOLATION
    report = json.loads((out_dir / "report.json").read_text())
    assert {t["spec"]: t["version"] for t in report["targets"]}["seeds-buggy"] == "pre-fix"
    assert report["run"]["versions"]["hypothesis"]
    record = next(r for r in report["results"]
                  if r["verdict"]["target"] == "seeds-buggy" and r["verdict"]["check"] == "expert-mapping")
    assert record["verdict"]["status"] == Status.FAIL and record["verdict"]["counterexample"]
    assert record["verdict"]["reproduce"].startswith("moe-harness run --target seeds-buggy")
    assert record["verdict"]["examples"] >= 1 and "generate" in record["stats"]
    md = (out_dir / "report.md").read_text()
    assert "| target | expert-mapping | capturer-shape |" in md
    assert "| seeds-buggy | **1 fail** |" in md and "```sh\nmoe-harness run --target seeds-buggy" in md
    junit = ET.fromstring((out_dir / "junit.xml").read_text())
    assert int(junit.get("failures")) == report["summary"]["fail"] >= 2
    assert junit.find(".//testcase[@classname='moe-harness.seeds-buggy.expert-mapping']/failure") is not None
    capsys.readouterr()

    assert main(["report", str(out_dir)]) == EXIT_VIOLATION  # the saved run's exit code
    text = capsys.readouterr().out
    assert "seeds-buggy  expert-mapping" in text and "FAIL expert-mapping[seeds-buggy-any]" in text
    # "any" and "synthetic" are no model families: gemma4 is the one the matrix ran over.
    assert "summary: 4 cases over 1 model family and 2 checks:" in text
    assert main(["report", str(out_dir), "--format", "markdown"]) == EXIT_VIOLATION
    assert capsys.readouterr().out.strip() == md.strip()
    assert main(["report", str(tmp_path / "missing")]) == EXIT_USAGE
    assert "report.json not found" in capsys.readouterr().err


def test_known_and_stale_are_shown_apart_from_new_failures() -> None:
    known = CaseResult(Verdict("capturer-shape", "t", "synthetic", Status.KNOWN, ErrorKind.PROPERTY_VIOLATION, "moe_topk",
                               known_reason="two of six spellings"))
    expected = CaseResult(Verdict("remap-idempotence", "t", "gemma4", Status.FAIL, ErrorKind.PROPERTY_VIOLATION, "x"), expected=True)
    stale = CaseResult(Verdict("remap-idempotence", "t", "mixtral", Status.PASS, message="stale known failure: passes now"),
                       stale=True)
    other = CaseResult(Verdict("capturer-shape", "a-longer-target", "gemma4", Status.PASS))
    matrix = render_matrix([known, expected, stale, other]).splitlines()
    assert "t                capturer-shape     " in matrix[1] and "t                remap-idempotence  " in matrix[2]
    assert matrix[3].startswith("a-longer-target  capturer-shape     ")
    assert len({len(line) for line in matrix[:4]}) == 1  # the columns line up whatever the names' lengths
    totals = render_totals([known, expected, stale])
    assert "1 passed, 0 new failures, 2 known failures" in totals


def _failing(family: str, message: str = "output shape (1, 64) != input shape (1, 1)") -> CaseResult:
    return CaseResult(Verdict("unpad-before-add", "t", family, Status.FAIL, ErrorKind.PROPERTY_VIOLATION, message,
                              {"hidden": 1}, "exact", f"moe-harness run --target t --family {family}"))


def test_one_bug_on_several_families_is_one_report_everywhere() -> None:
    """Cases failing exactly alike on several families are one bug report in the text, report.md and
    junit.xml, listing the families, each family's reproducer kept; a different failure stays apart."""
    results = [_failing("gemma4"), _failing("qwen2_moe"), _failing("mixtral", "another message"),
               _failing("deepseek_v3"), CaseResult(Verdict("unpad-before-add", "t", "olmoe", Status.PASS))]
    report = Report(RunInfo("moe-harness run", "dev", 1, None, 1, "now", 1.0), [], results)
    assert [[r.verdict.family for r in bug] for bug in report.bugs()] == [["gemma4", "qwen2_moe", "deepseek_v3"],
                                                                          ["mixtral"]]
    out = text.render_report(report)
    assert out.count("FAIL unpad-before-add[") == 2
    assert "FAIL unpad-before-add[t-gemma4] +2 more families" in out
    assert "family:    gemma4, qwen2_moe, deepseek_v3" in out and "--family qwen2_moe | deepseek_v3" in out
    assert "4 new failures, 0 known failures, 0 errors (2 bug reports)" in out
    md = markdown.render(report)
    assert "(2 bug reports over 4 cases)" in md and md.count("### FAIL") == 2
    by_family = md[md.index("## By family"):].splitlines()
    assert by_family[2:4] == ["| target | family | unpad-before-add |", "|---|---|---|"]
    assert "| t | `gemma4` | **fail** |" in by_family and "| t | `olmoe` | pass |" in by_family
    assert all(f"moe-harness run --target t --family {f}" in md for f in ("gemma4", "qwen2_moe", "deepseek_v3"))
    root = ET.fromstring(junit.render(report))
    assert root.get("failures") == "2" and root.get("tests") == "3"
    assert [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None] == \
        ["gemma4,qwen2_moe,deepseek_v3", "mixtral"]
    assert len(json.loads(report.to_json())["results"]) == 5  # every case's record is kept


def test_every_progress_line_but_a_pass_says_why() -> None:
    skipped = CaseResult(Verdict("block-parity", "t", "jamba", Status.SKIP, message="no block", skip_kind="harness-limit"))
    known = CaseResult(Verdict("capturer-shape", "t", "dbrx", Status.KNOWN, ErrorKind.PROPERTY_VIOLATION, "moe_top_k",
                               known_reason="two of six spellings\nsecond line"))
    failed = _failing("gemma4", "x" * 300)
    failed.stats = {"shrink": {"calls": 3}}
    passed = CaseResult(Verdict("block-parity", "t", "mixtral", Status.PASS, examples=25))
    lines = [text.render_progress(1, 4, r, 0) for r in (skipped, known, failed, passed)]
    assert lines[0].endswith(" - harness-limit: no block")
    assert lines[1].endswith(" - known: two of six spellings") and "KNOWN" in lines[1]
    assert "shrinking included" in lines[2] and lines[2].endswith("x...") and len(lines[2]) < 300
    assert lines[3].endswith("failures so far: 0)")


def test_failure_renders_as_a_bug_report() -> None:
    fail = Verdict("remap-idempotence", "t", "gemma4", Status.FAIL, ErrorKind.PROPERTY_VIOLATION, "not idempotent",
                   {"key": "a.experts.0.w"}, "exact", "moe-harness run ...")
    text = render_failure(fail, "@reproduce_failure('6.170.15', b'AA==')")
    assert "minimal counterexample" in text and "reproduce: moe-harness run" in text
    assert "moe-harness replay 'remap-idempotence[t-gemma4]'" in text and "@reproduce_failure" in text


def test_workers_run_cases_in_other_processes(run, capsys) -> None:
    code = run("run", "--target", "seeds-buggy", "--check", "expert-mapping", "--check", "remap-idempotence",
               "--family", "gemma4", "--workers", "2", "--quiet")
    out = capsys.readouterr().out
    assert code == EXIT_VIOLATION
    assert "FAIL expert-mapping[seeds-buggy-any]" in out and "FAIL remap-idempotence[seeds-buggy-gemma4]" in out


def test_each_run_draws_a_new_seed_and_prints_it_unless_pinned(tmp_path, capsys) -> None:
    """Without --seed every run explores other inputs and says which; --seed pins them (reproducers use it)."""
    def seed_line(*extra: str) -> str:
        main(["run", "--target", "reference", "--check", "routing-parity", "--family", "mixtral", "--workers", "0",
              "--quiet", "--db", str(tmp_path / "local"), "--regressions", str(tmp_path / "shared"), *extra])
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("seed "))

    first, second = seed_line(), seed_line()
    assert first != second and "draws the same inputs again" in first
    seed = first.split()[1]
    assert seed_line("--seed", seed) == first


def test_a_known_failure_whose_case_skips_is_reported_unconfirmed() -> None:
    """An entry the run could not check (its case skipped or errored) is neither KNOWN nor stale: it is said."""
    entry = Finding("config-spelling", "mixtral", "a spelling is dropped", signature="x", reproducer="raise SystemExit(1)")
    target = dataclasses.replace(load_target("reference"), name="listed", known_failures=[entry])
    result = execute(CHECKS["config-spelling"], target, get_family("mixtral"))
    assert result.verdict.status == Status.SKIP and result.unconfirmed == "a spelling is dropped"
    text = render_known([result])
    assert "UNCONFIRMED  config-spelling[listed-mixtral]: listed as a known failure (a spelling is dropped)" in text
    assert "was skipped here" in text


def test_checks_lists_every_check_with_its_capability(run, capsys) -> None:
    assert run("checks") == EXIT_OK
    out = capsys.readouterr().out
    for name, check in CHECKS.items():
        assert f"{name}  " in out and f"capability {check.capability}" in out
    assert "one case for all (any)" in out and "plus synthetic" in out


def test_families_says_per_family_whether_a_check_runs_and_why_not(run, capsys) -> None:
    assert run("families", "--target", "seeds-buggy", "--check", "functional-call") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "9 families of target seeds-buggy"
    gemma4 = lines.index(next(ln for ln in lines if ln.startswith("gemma4 ")))
    assert lines[gemma4].split()[1:] == ["gemma4", "8", "2", "*"] and lines[gemma4 + 1].strip() == "functional-call: runs"
    assert any("functional-call: skips (not-applicable): seeds-buggy builds blocks only for gemma4" in ln for ln in lines)
    assert run("families", "--check", "functional-call") == EXIT_USAGE  # which target's?
    assert "--check needs --target" in capsys.readouterr().err
    assert run("families", "--target", "seeds-buggy", "--check", "nope") == EXIT_USAGE


def test_discovery_reports_the_model_types_it_cannot_see() -> None:
    """A model type whose default config raises is listed with what it raised, never dropped silently."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from harness.tiny_configs import discover_moe_families, undiscoverable_model_types

    unseen = undiscoverable_model_types()
    assert set(unseen) <= set(CONFIG_MAPPING.keys()) and not set(unseen) & set(discover_moe_families())
    for name, why in unseen.items():
        with pytest.raises(Exception) as raised:
            CONFIG_MAPPING[name]()
        assert why.startswith(type(raised.value).__name__)


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["report", "{report}"], ["env", "list"],
                                  ["run", "--workers", "-1"]])
def test_the_front_end_imports_no_library_it_does_not_need(argv, tmp_path) -> None:
    """--help, argument errors, re-rendering a report and listing environments import neither torch nor
    transformers: they answer at once."""
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text(Report(
        RunInfo("moe-harness run", "ci", 1, None, 0, "2026-12-01T00:00:00+00:00", 1.0), [], []).to_json())
    argv = [a.format(report=tmp_path / "report") for a in argv]
    probe = ("import sys; from harness.cli import main; code = main(sys.argv[1:]); "
             "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
             "assert not heavy, f'imported {heavy}'; print('exit', code)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "exit" in done.stdout
