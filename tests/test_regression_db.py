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


def test_the_replay_hint_names_the_runs_databases(dirs, capsys) -> None:
    assert _run(dirs) == EXIT_VIOLATION
    assert f"moe-harness replay '{CASE}' --db {dirs[1]} --regressions {dirs[3]}" in capsys.readouterr().out


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


def _save_many(root: str, found: str, times: int) -> None:
    """One process saving the same case's record over and over (run by test_concurrent_saves...)."""
    record = Record(check="remap-idempotence", target="planted", target_spec=SPEC, family="gemma4",
                    target_version="1", kind=None, message="m", tolerance=None, reproduce="r", profile="dev", seed=0,
                    counterexample={"by": found, "pad": "x" * 400_000})  # large: a torn write is likely to be seen
    for _ in range(times):
        RegressionStore(Path(root), Path(root) / "shared").save(record)


def test_concurrent_saves_of_one_case_leave_a_whole_record(tmp_path: Path) -> None:
    """Three processes saving one case at once: every save succeeds and the record left is whole JSON."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_save_many, args=(str(tmp_path), f"p{i}", 60)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    [(record, origins)] = RegressionStore(tmp_path, tmp_path / "shared").records()
    assert record.counterexample["by"] in {"p0", "p1", "p2"} and origins == ("local",)
    assert [p.name for p in (tmp_path / "records").iterdir()] == [record.filename], "no temporary file left"


def test_a_damaged_record_is_skipped_with_a_line_not_a_crash(tmp_path: Path, capsys) -> None:
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "torn.json").write_text('{"check": "remap-idem')
    assert RegressionStore(tmp_path, tmp_path / "shared").records() == []
    assert "skipping unreadable regression record" in capsys.readouterr().err


def test_an_unwritable_database_or_report_directory_keeps_the_results(dirs, tmp_path: Path, capsys) -> None:
    """A checkout where nothing can be written (a file stands where the directories would go): the failure is
    still printed, one line says what was not written, and the exit code follows the README's table."""
    blocker = tmp_path / "read-only"
    blocker.write_text("")
    assert _run(["--db", str(blocker / "db")]) == EXIT_VIOLATION
    out, err = capsys.readouterr()
    assert "FAIL remap-idempotence[planted-gemma4]" in out and "failure record(s) not saved" in err
    assert _run(["--db", str(blocker / "db"), "--report-dir", str(blocker / "report")]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "summary:" in out and "could not write the report directory" in err
