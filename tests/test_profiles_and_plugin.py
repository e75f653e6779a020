"""Profiles are defined once and mean the same in the CLI and the pytest plugin; the plugin records only
unexpected failures, promotes them under nightly, and writes the report directory."""

from __future__ import annotations

import json

import pytest
from hypothesis import Phase, settings
from hypothesis.database import InMemoryExampleDatabase

from harness.profiles import PROFILES, profile_settings

pytest_plugins = ["pytester"]


def test_every_profile_is_deadline_free_and_seedable() -> None:
    assert set(PROFILES) == {"dev", "ci", "nightly", "gpu", "repro"}
    for name, profile in PROFILES.items():
        assert profile.deadline is None, name
        assert profile.derandomize is False, name  # derandomize would forbid the regression database
    assert PROFILES["ci"].print_blob and PROFILES["gpu"].print_blob
    assert PROFILES["nightly"].max_examples > PROFILES["ci"].max_examples > PROFILES["dev"].max_examples
    assert Phase.target in PROFILES["nightly"].phases
    assert tuple(PROFILES["repro"].phases) == (Phase.explicit, Phase.reuse)


def test_max_examples_overrides_and_database_is_passed_through() -> None:
    db = InMemoryExampleDatabase()
    chosen = profile_settings("nightly", 7, db)
    assert chosen.max_examples == 7 and chosen.database is db and chosen.deadline is None
    assert profile_settings("dev").database is None
    with pytest.raises(KeyError, match="valid profiles: dev, ci, nightly, gpu, repro"):
        profile_settings("nope")


def test_profiles_hold_under_hypothesis_ci_autoload() -> None:
    """CI=true makes Hypothesis load its own `ci` profile (derandomize, no database): ours must not inherit it."""
    before = settings.get_current_profile_name()
    settings.load_profile("ci")
    try:
        chosen = profile_settings("dev", None, InMemoryExampleDatabase())
        assert chosen.derandomize is False and chosen.database is not None
    finally:
        settings.load_profile(before)


_SUITE = """
from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import get_family
from tests.test_regression_db import planted_target


def _verdict(moe_profile):
    return run_case(CHECKS["remap-idempotence"], planted_target(), get_family("gemma4"), **moe_profile)


def test_seed_bug_is_caught(moe_profile):
    assert _verdict(moe_profile).status == "fail"


def test_target_must_pass(moe_profile):
    assert _verdict(moe_profile).status == "pass"
"""


def test_plugin_promotes_unexpected_failures_and_writes_the_report(pytester, tmp_path) -> None:
    pytester.makepyfile(test_suite=_SUITE)
    before = settings.get_current_profile_name()
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--moe-profile", "nightly", "--moe-max-examples", "5",
        "--moe-db", str(tmp_path / "local"), "--moe-regressions", str(tmp_path / "shared"),
        "--moe-report-dir", str(tmp_path / "report"))
    result.assert_outcomes(passed=1, failed=1)
    assert settings.get_current_profile_name() == before, "the plugin must give back the active profile"
    records = list((tmp_path / "shared" / "records").glob("*.json"))
    assert [p.name for p in records] == ["remap-idempotence__planted__gemma4.json"]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["run"]["profile"] == "nightly" and report["summary"]["fail"] == 1
    assert sorted(r["expected"] for r in report["results"]) == [False, True]
    assert "| planted | **1 fail**, 1 known |" in (tmp_path / "report" / "report.md").read_text()
