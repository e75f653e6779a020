"""Every check over targets × families: the oracle and the merged fixes pass; each seed bug is caught.

What each seed target must fail on is data: the `expected = true` entries of its findings file
(harness/targets/seeds/findings/<target>.toml), each with the signature the failure must show.
"""

from __future__ import annotations

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.findings import expected_failures
from harness.reports.text import render_failure
from harness.selection import select_cases
from harness.verdict import Status

# Targets that must pass every check (or fail only as they record); the seed targets must fail where expected.
MUST_PASS_TARGETS = ("reference", "seeds-fixed", "reference-triton")
SEED_TARGETS = ("seeds-buggy", "seeds-lookahead")


def _cases(check: str, targets: tuple[str, ...]) -> list:
    # A target without the capability is not a case of this check at all.
    return [pytest.param(c, id=c.id) for c in select_cases(list(targets), [check])
            if getattr(c.target, c.check.capability) is not None]


def _make_test(check_name: str):
    @pytest.mark.parametrize("case", _cases(check_name, MUST_PASS_TARGETS + SEED_TARGETS))
    def test(case, moe_profile):
        expected = expected_failures(case.target.name, check_name, case.family.name)
        verdict = run_case(case.check, case.target, case.family, **moe_profile)
        if verdict.status == Status.SKIP:
            pytest.skip(verdict.message)
        if expected:
            reasons = "; ".join(f.reason for f in expected)
            assert verdict.status == Status.FAIL, f"{reasons} was not caught: {verdict.status} {verdict.message}"
            assert verdict.counterexample and verdict.reproduce
            assert any(f.matches(verdict.counterexample) for f in expected), (
                f"caught a different failure than {reasons}:\n{render_failure(verdict)}")
        else:
            # The oracle and the fixes pass; a buggy target must not trip a check it has no bug for.
            assert verdict.status in (Status.PASS, Status.KNOWN), render_failure(verdict)

    test.__name__ = "test_" + check_name.replace("-", "_")
    return test


for _name in CHECKS:
    globals()["test_" + _name.replace("-", "_")] = _make_test(_name)
