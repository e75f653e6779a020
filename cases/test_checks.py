"""Every check over targets × families: the oracle and the merged fixes pass; each seed bug is caught."""

from __future__ import annotations

import pytest

from cases.expectations import MUST_FAIL, MUST_PASS_TARGETS
from harness.checks import CHECKS
from harness.engine import run_case
from harness.reports.text import render_failure
from harness.selection import select_cases
from harness.verdict import FAIL, KNOWN, PASS, SKIP


def _cases(check: str, targets: tuple[str, ...]) -> list:
    # A target without the capability is not a case of this check at all.
    return [pytest.param(c, id=c.id) for c in select_cases(list(targets), [check])
            if getattr(c.target, c.check.capability) is not None]


def _make_test(check_name: str):
    @pytest.mark.parametrize("case", _cases(check_name, MUST_PASS_TARGETS + ("seeds-buggy", "seeds-lookahead")))
    def test(case, moe_profile):
        key = (case.target.name, check_name, case.family.name)
        verdict = run_case(case.check, case.target, case.family, **moe_profile)
        if verdict.status == SKIP:
            pytest.skip(verdict.message)
        if key in MUST_FAIL:
            assert verdict.status == FAIL, f"{MUST_FAIL[key]} was not caught: {verdict.status} {verdict.message}"
            assert verdict.counterexample and verdict.reproduce
        elif case.target.name in MUST_PASS_TARGETS:
            assert verdict.status in (PASS, KNOWN), render_failure(verdict)
        else:
            # A buggy target outside its seed's checks must not trip a check it has no bug for.
            assert verdict.status in (PASS, KNOWN), render_failure(verdict)

    test.__name__ = "test_" + check_name.replace("-", "_")
    return test


for _name in CHECKS:
    globals()["test_" + _name.replace("-", "_")] = _make_test(_name)
