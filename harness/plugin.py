"""The pytest plugin (entry point `pytest11`): a `--moe-profile` option and the `moe_profile` fixture."""

from __future__ import annotations

import pytest

from harness.profiles import PROFILES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("moe-harness")
    group.addoption("--moe-profile", default="dev", choices=sorted(PROFILES),
                    help="Hypothesis profile for moe-harness cases (default: dev)")
    group.addoption("--moe-max-examples", type=int, default=None, help="override the profile's example count")


@pytest.fixture
def moe_profile(request: pytest.FixtureRequest) -> dict[str, object]:
    """Keyword arguments for `harness.engine.run_case` from the command line."""
    return {"profile": request.config.getoption("--moe-profile"),
            "max_examples": request.config.getoption("--moe-max-examples")}
