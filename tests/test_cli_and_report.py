"""The face: CLI exit codes, usage errors listing valid names, the report directory, re-rendering it."""

from __future__ import annotations

import dataclasses
import json
import shlex
import xml.etree.ElementTree as ET

from harness.checks import CHECKS
from harness.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, main
from harness.engine import execute
from harness.families import get_family
from harness.findings import Finding
from harness.outcome import CaseResult
from harness.reports.text import render_failure, render_known, render_matrix, render_totals
from harness.targets import load_target
from harness.verdict import ErrorKind, Status, Verdict


def test_buggy_seed_exits_1_with_a_replay_line(run, capsys) -> None:
    code = run("run", "--target", "seeds-buggy", "--check", "remap-idempotence", "--family", "gemma4", "--quiet")
    out = capsys.readouterr().out
    assert code == EXIT_VIOLATION
    assert ".moe.moe." in out and "reproduce: moe-harness run --target seeds-buggy" in out
    assert "summary: 1 cases over 1 families and 1 checks: 0 passed, 1 new failures" in out


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
    matrix = render_matrix([known, expected, stale])
    assert "t  capturer-shape" in matrix and "t  remap-idempotence" in matrix
    totals = render_totals([known, expected, stale])
    assert "1 passed, 0 new failures, 2 known failures" in totals


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
