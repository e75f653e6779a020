"""The regression database: a planted failure lands in the local database, replay says FAILED, the fix
makes it FIXED, --prune removes it; the nightly profile promotes into the shared directory; ordinary runs
never write the shared one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, main
from harness.database import SHARED_DIR, Record, RegressionStore, case_key
from harness.targets.base import RemapCap, Target
from harness.targets.seeds import seed_002_gemma4_remap as gemma4_remap

SPEC = f"{__name__}:planted_target"
CASE = "remap-idempotence[planted-gemma4]"
PLANTED = {"bug": True}


def planted_target() -> Target:
    """Seed 002's remap, with the bug switched on or off through PLANTED."""

    def remap(key: str) -> str:
        fn = gemma4_remap.remap_buggy if PLANTED["bug"] else gemma4_remap.remap_fixed
        return fn(key)

    return Target(name="planted", version="1", description="seed 002 remap, bug switchable",
                  remap=RemapCap(remap, gemma4_remap.ACCEPTS, gemma4_remap.PRODUCES))


@pytest.fixture
def dirs(tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "local"), "--regressions", str(tmp_path / "shared")]


def _run(dirs: list[str], *extra: str) -> int:
    return main(["run", "--target", SPEC, "--check", "remap-idempotence", "--family", "gemma4", "--quiet",
                 *extra, *dirs])


def test_planted_failure_replays_failed_then_fixed_then_pruned(dirs, tmp_path, capsys, monkeypatch) -> None:
    store = RegressionStore(tmp_path / "local", tmp_path / "shared")
    key = case_key("remap-idempotence", "planted", "gemma4")
    assert _run(dirs) == EXIT_VIOLATION
    assert store.stored_examples(key) >= 1
    record = Record.from_json((tmp_path / "local" / "records" / "remap-idempotence__planted__gemma4.json").read_text())
    assert record.target_spec == SPEC and record.versions["hypothesis"] and ".moe.moe." in json.dumps(
        record.counterexample)
    assert not (tmp_path / "shared").exists(), "an ordinary run must not write the shared directory"
    capsys.readouterr()

    assert main(["replay", *dirs]) == EXIT_VIOLATION
    out = capsys.readouterr().out
    assert f"FAILED {CASE}  [local]: remap is not idempotent" in out
    assert f"reproduce: moe-harness run --target {SPEC}" in out and "--profile dev" in out

    monkeypatch.setitem(PLANTED, "bug", False)
    assert main(["replay", *dirs]) == EXIT_OK
    assert f"FIXED  {CASE}" in capsys.readouterr().out
    assert main(["replay", "--prune", *dirs]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"FIXED  {CASE}" in out and "pruned 1 fixed case(s)" in out
    assert store.records() == [] and store.stored_examples(key) == 0
    assert main(["replay", *dirs]) == EXIT_OK
    assert "0 stored cases" in capsys.readouterr().out


def test_stored_failure_is_replayed_first_by_the_next_run(dirs, tmp_path, capsys) -> None:
    assert _run(dirs) == EXIT_VIOLATION
    assert _run(dirs, "--profile", "repro") == EXIT_VIOLATION  # generates nothing: only the stored example
    assert f"FAIL {CASE}" in capsys.readouterr().out


def test_nightly_promotes_new_failures_into_the_shared_directory(dirs, tmp_path, capsys) -> None:
    assert _run(dirs, "--profile", "nightly", "--max-examples", "5") == EXIT_VIOLATION
    shared = RegressionStore(tmp_path / "unused", tmp_path / "shared")
    [(record, origins)] = shared.records()
    assert record.case_id == CASE and record.profile == "nightly" and origins == ("shared",)
    assert shared.stored_examples(record.key) >= 1
    # Another machine with an empty local database replays it from the shared directory alone.
    other = ["--db", str(tmp_path / "other-local"), "--regressions", str(tmp_path / "shared")]
    capsys.readouterr()
    assert main(["replay", *other]) == EXIT_VIOLATION
    assert f"FAILED {CASE}  [shared]" in capsys.readouterr().out


def test_replay_says_error_for_a_case_that_cannot_run(dirs, tmp_path, capsys) -> None:
    record = Record(check="remap-idempotence", target="gone", target_spec="no_such_module_xyz:target",
                    family="gemma4", target_version="1", kind=None, message="m", counterexample={},
                    tolerance=None, reproduce="moe-harness run ...", profile="dev", seed=1)
    RegressionStore(tmp_path / "local", tmp_path / "shared").save(record)
    assert main(["replay", *dirs]) == EXIT_USAGE
    assert "ERROR  remap-idempotence[gone-gemma4]  [local]: target 'no_such_module_xyz:target' does not load" \
        in capsys.readouterr().out
    assert main(["replay", "nope[x-y]", *dirs]) == EXIT_USAGE
    assert "stored cases: remap-idempotence[gone-gemma4]" in capsys.readouterr().err


def test_committed_regression_directory_is_readable() -> None:
    """cases/regressions holds only well-formed records (each with stored examples beside it)."""
    committed = Path(__file__).resolve().parent.parent / SHARED_DIR
    store = RegressionStore(committed / "no-local", committed)
    for record, _ in store.records():
        assert record.reproduce.startswith("moe-harness run") and store.stored_examples(record.key) >= 1
