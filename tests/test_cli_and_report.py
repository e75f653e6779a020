"""The face: CLI exit codes, usage errors listing valid names, reports that render."""

from __future__ import annotations

from harness.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, main
from harness.report import render_failure, render_summary
from harness.verdict import FAIL, PASS, PROPERTY_VIOLATION, Verdict


def test_buggy_seed_exits_1_with_a_replay_line(capsys) -> None:
    code = main(["run", "--target", "seeds-buggy", "--check", "remap-idempotence", "--family", "gemma4", "--quiet"])
    out = capsys.readouterr().out
    assert code == EXIT_VIOLATION
    assert ".moe.moe." in out and "reproduce: moe-harness run --target seeds-buggy" in out


def test_fixed_seed_exits_0(capsys) -> None:
    assert main(["run", "--target", "seeds-fixed", "--check", "remap-idempotence", "--quiet"]) == EXIT_OK


def test_unknown_names_exit_2_and_list_valid_ones(capsys) -> None:
    assert main(["run", "--target", "nope"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "valid targets" in err and "seeds-buggy" in err
    assert main(["run", "--check", "nope"]) == EXIT_USAGE
    assert "valid checks" in capsys.readouterr().err


def test_targets_lists_capabilities(capsys) -> None:
    assert main(["targets"]) == EXIT_OK
    assert "expert_mapping" in capsys.readouterr().out


def test_reports_render() -> None:
    fail = Verdict("remap-idempotence", "t", "gemma4", FAIL, PROPERTY_VIOLATION, "not idempotent",
                   {"key": "a.experts.0.w"}, "exact", "moe-harness run ...")
    text = render_failure(fail)
    assert "minimal counterexample" in text and "reproduce: moe-harness run" in text
    summary = render_summary([fail, Verdict("remap-idempotence", "t", "mixtral", PASS)])
    assert "2 cases: 1 pass, 1 fail" in summary
