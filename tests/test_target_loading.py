"""Target plumbing: registry names, entry points, a user's `module:object` adapter, and targets that cannot load."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from harness.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, main
from harness.targets import TargetUnavailable, UnknownTarget, load_target, registered_targets
from harness.targets.base import Target
from harness.targets.loading import ENTRY_POINT_GROUP

ADAPTER = "examples.my_engine_adapter:make_target"
ROOT = Path(__file__).resolve().parent.parent


def test_user_adapter_runs_through_module_object_spec(run, capsys) -> None:
    assert run("run", "--target", ADAPTER, "--check", "routing-parity", "--family", "mixtral", "--quiet") == EXIT_OK
    out = capsys.readouterr().out
    assert "my-engine  routing-parity" in out and "1 passed" in out


def test_user_adapter_bug_is_reported_with_its_spec_in_the_reproducer(run, capsys, monkeypatch) -> None:
    import examples.my_engine_adapter as adapter

    original = adapter.route

    def forgets_to_renormalise(logits, knobs, **kw):
        return original(logits, dataclasses.replace(knobs, renormalize=False), **kw)

    monkeypatch.setattr(adapter, "route", forgets_to_renormalise)
    assert run("run", "--target", ADAPTER, "--check", "routing-parity", "--family", "mixtral", "--quiet") == 1
    out = capsys.readouterr().out
    assert "FAIL routing-parity[my-engine-mixtral]" in out
    assert f"reproduce: moe-harness run --target {ADAPTER} --check routing-parity" in out


def test_readme_shows_the_tested_adapter() -> None:
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "examples" / "my_engine_adapter.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert source in blocks, "README's adapter block must equal examples/my_engine_adapter.py"


@pytest.mark.parametrize(("spec", "says"), [
    ("no_such_module_xyz:target", "no module named 'no_such_module_xyz'"),
    ("examples.my_engine_adapter:nope", "Targets or functions it defines: make_target, route"),
    ("examples.my_engine_adapter", "unknown target"),
    ("examples.my_engine_adapter:", "must read package.module:object"),
    ("examples.my_engine_adapter:torch", "is a module, not a harness.targets.base.Target"),
])
def test_bad_spec_is_a_usage_error_saying_how_to_fix_it(run, capsys, spec, says) -> None:
    assert run("run", "--target", spec) == EXIT_USAGE
    assert says in capsys.readouterr().err


def test_target_whose_dependency_is_missing_is_skipped_with_the_reason(run, capsys, tmp_path, monkeypatch) -> None:
    (tmp_path / "needs_engine.py").write_text("import some_engine_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TargetUnavailable, match="some_engine_not_installed"):
        load_target("needs_engine:make_target")
    code = run("run", "--target", "needs_engine:make_target", "--target", "seeds-fixed",
               "--check", "remap-idempotence", "--family", "gemma4", "--quiet")
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "SKIP   target needs_engine:make_target: not available here" in out and "some_engine_not_installed" in out


def test_entry_point_targets_are_discovered(tmp_path, monkeypatch, capsys) -> None:
    dist = tmp_path / "my_engine_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-engine-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmy-engine = {ADAPTER}\n"
                                           f"broken-engine = some_engine_not_installed:target\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"reference", "my-engine", "broken-engine"} <= set(registered_targets())
    assert load_target("my-engine").name == "my-engine"
    assert main(["targets", "--json"]) == EXIT_OK
    listed = {t["spec"]: t for t in json.loads(capsys.readouterr().out)}
    assert listed["my-engine"]["capabilities"] == ["routing"] and listed["my-engine"]["version"] == "1.0"
    assert listed["broken-engine"]["status"] == "unavailable"
    assert "some_engine_not_installed" in listed["broken-engine"]["reason"]
    assert listed["seeds-buggy"]["version"] == "pre-fix"


def test_targets_lists_versions_and_capabilities(capsys) -> None:
    assert main(["targets"]) == EXIT_OK
    out = capsys.readouterr().out
    assert re.search(r"seeds-fixed\s+merged\s+remap, expert_mapping", out)
    assert main(["targets", ADAPTER, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)[0]["name"] == "my-engine"
    assert main(["targets", "nope"]) == EXIT_USAGE


def test_unknown_name_lists_registered_targets() -> None:
    with pytest.raises(UnknownTarget, match="valid targets: reference, seeds-buggy"):
        load_target("nope")


MISBEHAVING = '''
import os
import torch
from harness.targets.base import RoutingCap, Target
from reference.routing import route

if os.environ.get("MISBEHAVE") == "import":
    raise RuntimeError("the engine's extension failed to initialise")


def make_target():
    if os.environ.get("MISBEHAVE") == "factory":
        raise ValueError("no device configured")

    def routing(logits, knobs, **kw):
        if os.environ.get("MISBEHAVE") == "exit":
            raise SystemExit(3)
        if os.environ.get("MISBEHAVE") == "slow":
            import time
            time.sleep(0.05)
        if os.environ.get("MISBEHAVE") == "abort" and logits.shape[1] > 60:  # a native crash, on some inputs
            os.abort()
        if os.environ.get("MISBEHAVE") == "hang":
            import time
            time.sleep(10_000)
        return None if os.environ.get("MISBEHAVE") == "none" else route(logits, knobs, **kw)

    return Target(name="misbehaving", version="0", description="an adapter that misbehaves on request",
                  routing=RoutingCap(routing, ("softmax_topk",)))
'''


@pytest.mark.parametrize("how, says", [
    ("import", "importing 'misbehaving_engine' raised RuntimeError: the engine's extension failed to initialise (at "),
    ("factory", "raised while building the target: ValueError: no device configured (at "),
    ("none", "routing(logits, knobs) returned None; expected Tensor and Tensor"),
    ("exit", "routing(logits, knobs) raised SystemExit: 3 (at "),
])
def test_a_misbehaving_target_is_a_target_error_naming_its_line(run, capsys, tmp_path, monkeypatch, how, says) -> None:
    """Raising at import, in its factory or in a call, SystemExit included, or returning None where a pair of
    tensors is due: each is the target's error (with the target's own file:line where it raised), never ours."""
    (tmp_path / "misbehaving_engine.py").write_text(MISBEHAVING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MISBEHAVE", how)
    code = run("run", "--target", "misbehaving_engine:make_target", "--check", "routing-parity", "--family",
               "mixtral", "--report-dir", str(tmp_path / "report"))
    out = capsys.readouterr().out
    assert says in out, out[-2000:]
    assert "[harness-error]" not in out and "harness error" not in out
    kinds = {r["verdict"]["kind"] for r in json.loads((tmp_path / "report" / "report.json").read_text())["results"]}
    assert kinds == {"target-error"}
    if how in ("import", "factory"):
        assert code == EXIT_USAGE  # nothing of the target could run (README's exit-code table)
    if how != "none":
        assert "misbehaving_engine.py:" in out, "the target's own frame is shown"


def test_a_loaded_targets_failures_name_the_spec_it_was_loaded_by(tmp_path, monkeypatch) -> None:
    """Under pytest too (run_case, no CLI): the reproducer and the stored record name `module:object`, which
    loads the adapter again, not the Target's bare name, which does not."""
    from harness.checks import CHECKS
    from harness.engine import run_case
    from harness.families import get_family

    (tmp_path / "misbehaving_engine.py").write_text(MISBEHAVING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MISBEHAVE", "none")
    target = load_target("misbehaving_engine:make_target")
    verdict = run_case(CHECKS["routing-parity"], target, get_family("mixtral"))
    assert "--target misbehaving_engine:make_target " in verdict.reproduce


def test_ctrl_c_reports_the_cases_that_finished(tmp_path) -> None:
    """SIGINT part-way through a run: exit 130, the summary and the report directory hold the finished cases,
    marked interrupted, and no traceback. A terminal's Ctrl-C signals the whole process group, the worker
    processes too (at the H200 nightly that once ended a run with 'RuntimeError: release unlocked lock' and
    no report)."""
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "misbehaving_engine.py").write_text(MISBEHAVING)
    env = {**os.environ, "MISBEHAVE": "slow", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    families = ["--family", "mixtral", "--family", "qwen3_moe", "--family", "olmoe", "--family", "qwen2_moe"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--target", "misbehaving_engine:make_target", "--check",
         "routing-parity", *families, "--max-examples", "40", "--workers", "2", "--db", str(tmp_path / "db"),
         "--report-dir", str(tmp_path / "report")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        # A shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt:
        # give the run the default disposition a terminal's Ctrl-C meets.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first case's progress line: one case has finished
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the run and its workers
    out, err = proc.communicate(timeout=120)
    assert "[1/4]" in first and proc.returncode == 130, (first, out, err[-2000:])
    assert "INTERRUPTED:" in out and "Traceback" not in err, err[-2000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["run"]["interrupted"] is True and report["run"]["planned"] == 4
    assert 1 <= len(report["results"]) < 4


def test_a_hanging_case_is_stopped_at_its_wall_limit_and_the_run_goes_on(run, capsys, tmp_path, monkeypatch) -> None:
    (tmp_path / "misbehaving_engine.py").write_text(MISBEHAVING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MISBEHAVE", "hang")
    code = run("run", "--target", "misbehaving_engine:make_target", "--target", "reference", "--check",
               "routing-parity", "--family", "mixtral", "--case-timeout", "3", "--report-dir", str(tmp_path / "report"))
    out = capsys.readouterr().out
    assert code == EXIT_VIOLATION
    assert "ran past its wall limit of 3 s" in out and "[target-error]" in out
    verdicts = {r["verdict"]["target"]: r["verdict"] for r in
                json.loads((tmp_path / "report" / "report.json").read_text())["results"]}
    hung = verdicts["misbehaving"]
    assert (hung["status"], hung["kind"]) == ("fail", "target-error") and "experts" in hung["counterexample"]
    assert verdicts["reference"]["status"] == "pass"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_native_crash_fails_only_its_own_case(run, capsys, tmp_path, monkeypatch, workers) -> None:
    """An adapter that aborts (what a segfaulting kernel does), with the default one worker or two: its case
    is the target's crash, named with a reproducer; the other cases (the oracle's too) and the report are
    unaffected."""
    (tmp_path / "misbehaving_engine.py").write_text(MISBEHAVING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MISBEHAVE", "abort")
    code = run("run", "--target", "misbehaving_engine:make_target", "--target", "reference", "--check",
               "routing-parity", "--family", "mixtral", "--family", "qwen3_moe", "--workers", workers,
               "--report-dir", str(tmp_path / "report"))
    out = capsys.readouterr().out
    assert code == EXIT_VIOLATION
    verdicts = {(r["verdict"]["target"], r["verdict"]["family"]): r["verdict"] for r in
                json.loads((tmp_path / "report" / "report.json").read_text())["results"]}
    crashed = [v for v in verdicts.values() if v["status"] == "fail"]
    assert crashed and all(v["target"] == "misbehaving" and v["kind"] == "target-error" for v in crashed)
    assert "worker process running this case died" in out and "--target misbehaving_engine:make_target" in out
    assert verdicts[("reference", "mixtral")]["status"] == verdicts[("reference", "qwen3_moe")]["status"] == "pass"


def _raises_key_error(*args: object, **kwargs: object) -> None:
    raise KeyError("num_experts")


def _contract_slips() -> list[tuple[str, str, str, object]]:
    """(check, family, what the verdict names, a target whose adapter breaks its capability's contract)."""
    from harness.targets.transformers.config_variants import CONFIG_VARIANTS
    from harness.targets.transformers.conversion import CONVERSION

    reference = load_target("reference")
    loader = dataclasses.replace(reference.checkpoint_loader, load=lambda directory, spec: None)
    bare = Target(name="slips", version="0", description="adapters that break their contracts",
                  checkpoint_loader=loader,
                  config_variants=dataclasses.replace(CONFIG_VARIANTS, build_and_run=_raises_key_error),
                  conversion=dataclasses.replace(CONVERSION, rules=_raises_key_error))
    return [("checkpoint-roundtrip", "mixtral", "has no .report", bare),
            ("config-accepted", "mixtral", "build_and_run('mixtral'", bare),
            ("conversion-remap", "mixtral", "rules('mixtral') raised KeyError", bare)]


@pytest.mark.parametrize("check, family, says", [c[:3] for c in _contract_slips()])
def test_an_adapter_breaking_its_capability_contract_is_a_target_error(check, family, says) -> None:
    """A capability function that raises outside its contract, or returns what it must not, is the target's
    error naming the call, whether at preparation (rules, fields) or in an example (build_and_run, load)."""
    from harness.checks import CHECKS
    from harness.engine import execute
    from harness.families import get_family
    from harness.verdict import ErrorKind, Status

    target = _contract_slips()[0][3]
    verdict = execute(CHECKS[check], target, get_family(family), max_examples=5).verdict
    assert (verdict.status, verdict.kind) == (Status.FAIL, ErrorKind.TARGET_ERROR), verdict.message
    assert says in verdict.message


def test_a_ctrl_c_while_the_workers_run_is_raised_where_the_run_can_stop() -> None:
    """SIGINT inside the pool's wait only sets a flag (raised there it can break the standard library's locks);
    `check` raises it, and leaving restores the handler."""
    import os
    import signal

    from harness.runner import DeferredInterrupt

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal's foreground run has it
    try:
        with DeferredInterrupt() as interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call into C: Python runs the pending handler after it
            assert interrupt.requested
            with pytest.raises(KeyboardInterrupt):
                interrupt.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
