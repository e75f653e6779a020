"""The findings store (harness/targets/<package>/findings/<target>.toml) holds what it claims.

Each reproducer, run alone in a fresh process (a fork of one that imported the heavy libraries once,
harness/reproducers.py), still shows its defect (an entry whose reproducer exits 0 is
stale); each pin replays its finding under the `repro` profile (no generation at all), so the suite keeps every
real-target failure without the example database; a signature tells its failure from a different one.
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.checks import CHECKS
from harness.engine import _failure_record, run_case
from harness.families import get_family
from harness.findings import Finding, all_findings, finding_files
from harness.pins import BUILDERS, Pin, all_pins
from harness.reproducers import ReproducerServer
from harness.targets import BUILTIN, TargetUnavailable, load_target
from harness.targets.base import Target
from harness.tiny_configs import discover_moe_families
from harness.verdict import PropertyViolation, Status, TargetError

ROOT = Path(__file__).resolve().parent.parent
REPRODUCER_TIMEOUT_S = 300


def _id(finding: Finding) -> str:
    return f"{finding.check}[{finding.target}-{finding.family}]"


@functools.cache
def _loaded(name: str) -> Target | TargetUnavailable:
    """The target, loaded once per test process (loading mlx-lm's asks its worker, seconds each time)."""
    try:
        return load_target(name)
    except TargetUnavailable as exc:
        return exc


def _target(name: str) -> Target:
    loaded = _loaded(name)
    if isinstance(loaded, TargetUnavailable):
        pytest.skip(f"target {name} is not available here: {loaded}")
    return loaded


@functools.cache
def _python_of(target: str) -> str:
    """The Python a target's reproducers run in: this one, or its worker's environment's where the harness does not
    run there (mlx-lm: no torch), built by loading the target."""
    from harness.environments.builder import python_of
    from harness.environments.registry import environment_for

    env = environment_for(target)
    return str(python_of(env)) if env is not None and not env.harness else sys.executable


def test_every_file_belongs_to_a_builtin_target_and_every_entry_to_a_check() -> None:
    assert set(finding_files()) <= set(BUILTIN), sorted(set(finding_files()) - set(BUILTIN))
    for finding in all_findings():
        assert finding.check in (*CHECKS, "*"), f"{_id(finding)}: no check {finding.check!r}"
        assert set(finding.also) <= set(CHECKS), f"{_id(finding)}: no check {set(finding.also) - set(CHECKS)}"
        if finding.pin is not None:
            assert finding.pin["kind"] in BUILDERS, f"{_id(finding)}: no pin builder {finding.pin['kind']!r}"


def test_every_reproducer_is_its_own() -> None:
    """One defect, one reproducer: an entry copying another's shows that other family's defect, not its own."""
    shared = [text for text, n in Counter(f.reproducer for f in all_findings() if f.reproducer).items() if n > 1]
    assert not shared, f"reproducers shared word for word by several entries: {shared}"


@pytest.fixture(scope="session")
def reproducer_servers() -> Iterator[dict[str, ReproducerServer]]:
    """One reproducer server per Python, started on first use, for this test process."""
    servers: dict[str, ReproducerServer] = {}
    yield servers
    for server in servers.values():
        server.close()


@pytest.mark.parametrize("finding", [f for f in all_findings() if f.reproducer], ids=_id)
def test_reproducer_still_shows_its_defect(finding: Finding, reproducer_servers: dict[str, ReproducerServer]) -> None:
    _target(finding.target)  # vllm's entries run only where vllm imports
    if finding.target == "transformers" and finding.family not in discover_moe_families():
        pytest.skip(f"this transformers has no family {finding.family}: its reproducer would raise for that alone")
    python = _python_of(finding.target)
    if python not in reproducer_servers:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        reproducer_servers[python] = ReproducerServer(python, ROOT, env)
    run = reproducer_servers[python].run(finding.reproducer, REPRODUCER_TIMEOUT_S)
    assert not run.timed_out, f"{_id(finding)}'s reproducer ran past {REPRODUCER_TIMEOUT_S} s:\n{run.stderr[-2000:]}"
    assert run.returncode != 0, (f"stale finding: {_id(finding)}'s reproducer no longer shows the defect "
                                 f"({finding.reason}); delete the entry, or keep its pin as `regression = true`")
    last = (run.stderr.strip().splitlines() or [""])[-1]
    assert "Error" in last or "Exception" in last, f"the reproducer exited {run.returncode} without raising:\n{run.stderr}"


@pytest.mark.parametrize("pin", all_pins(), ids=lambda p: _id(p.finding))
def test_pin_replays_its_finding_without_generation(pin: Pin) -> None:
    finding = pin.finding
    target = _target(finding.target)
    check, family = CHECKS[finding.check], get_family(finding.family)
    verdict = run_case(check, target, family, profile="repro")
    if verdict.status == Status.SKIP:  # e.g. an older transformers without the family or the API the check calls
        pytest.skip(verdict.message)
    assert verdict.examples >= 1, "the pin did not run"
    if finding.regression:
        assert verdict.status == Status.PASS, f"a fixed finding came back ({finding.reason}): {verdict}"
        return
    assert verdict.status == Status.KNOWN, f"{finding.reason}: expected the recorded failure, got {verdict}"
    # The case tries all its pins and stops at the first failure: judge this pin's example on its own, so a
    # case with several findings shows each one's signature.
    example = pin.build()
    with pytest.raises((PropertyViolation, TargetError)) as caught:
        check.prop(target, family, example)
    counterexample = _failure_record(check, example, caught.value)[3]  # as the engine records it, target errors too
    assert finding.matches(counterexample), (
        f"the pin's failure does not show the signature {finding.signature!r}: {counterexample}")


@pytest.mark.parametrize("name", ["transformers", "vllm"])
def test_every_known_failure_that_runs_is_pinned(name: str) -> None:
    target = _target(name)
    pinned = {(p.finding.check, p.finding.family) for p in all_pins() if p.finding.target == name}
    for kf in target.known_failures:
        # check "*": fails at set-up, before any example; family "*": met by generation on every family.
        if (kf.check, kf.family) in pinned or "*" in (kf.check, kf.family):
            continue
        # A case that skips here (its tiny model has no expert tensors, say) has no counterexample to pin.
        verdict = run_case(CHECKS[kf.check], target, get_family(kf.family), profile="dev", max_examples=1)
        assert verdict.status == Status.SKIP, f"{name} {kf.check} {kf.family} runs here and has no pin"


def test_a_known_failure_covers_only_its_signature() -> None:
    known = Finding("conversion-remap", "fam", "a rule re-applies", signature=r"(?m)^once=.*\.mlp\.mlp\.",
                    reproducer="raise SystemExit(1)")
    target = Target("t", "0", "a target", known_failures=[known])
    assert target.known_failure("conversion-remap", "fam") is known  # no counterexample: a pass, found stale
    assert target.known_failure("conversion-remap", "fam", {}) is known
    assert target.known_failure("conversion-remap", "fam", {"once": "layers.0.mlp.mlp.experts.0.w1"}) is known
    assert target.known_failure("conversion-remap", "fam", {"once": "layers.0.mlp.experts..w1"}) is None
    assert target.known_failure("conversion-remap", "other", {"once": "layers.0.mlp.mlp.x"}) is None


def test_expected_and_regression_entries_are_not_known_failures() -> None:
    for name in ("seeds-buggy", "seeds-lookahead", "reference-triton"):
        assert load_target(name).known_failures == [], f"{name}'s failures must read FAIL, never KNOWN"
    assert any(f.expected for f in all_findings() if f.target == "seeds-buggy")
