"""Pinned counterexamples: each one runs under the `repro` profile (no generation at all) and still
shows its finding, so the suite keeps every real-target failure without the example database."""

from __future__ import annotations

import dataclasses

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import get_family
from harness.pinned import PINS, Pin
from harness.targets import TargetUnavailable, load_target
from harness.verdict import FAIL, KNOWN, PASS, SKIP


def _target(name: str):
    try:
        return load_target(name)
    except TargetUnavailable as exc:
        pytest.skip(f"target {name} is not available here: {exc}")


@pytest.mark.parametrize("pin", PINS, ids=lambda p: f"{p.check}[{p.target}-{p.family}]")
def test_pin_replays_its_finding_without_generation(pin: Pin) -> None:
    target = _target(pin.target)
    check, family = CHECKS[pin.check], get_family(pin.family)
    verdict = run_case(check, target, family, profile="repro")
    if verdict.status == SKIP:  # e.g. an older transformers without the family or the API the check calls
        pytest.skip(verdict.message)
    assert verdict.examples >= 1, "the pin did not run"
    if target.known_failure(pin.check, pin.family) is None:
        assert verdict.status == PASS, f"a fixed finding came back: {verdict}"
        return
    assert verdict.status == KNOWN, f"{pin.finding}: expected the recorded failure, got {verdict}"
    unrecorded = dataclasses.replace(target, known_failures=[])
    assert run_case(check, unrecorded, family, profile="repro").status == FAIL


@pytest.mark.parametrize("name", ["transformers", "vllm"])
def test_every_known_failure_that_runs_is_pinned(name: str) -> None:
    target = _target(name)
    pinned = {(p.check, p.target, p.family) for p in PINS}
    for kf in target.known_failures:
        # A case that skips here (its tiny config has no MoE layer, say) has no counterexample to pin.
        if CHECKS[kf.check].skip_reason(target, get_family(kf.family)) is None:
            assert (kf.check, name, kf.family) in pinned, f"{name} {kf.check} {kf.family} has no pin"
