"""Hypothesis profiles, registered in one place and chosen by name (CLI `--profile`, pytest `--moe-profile`).

- dev      default; quick (25 examples).
- ci       50 examples; prints the `@reproduce_failure` blob of each failure.
- nightly  1000 examples with the target phase; the CLI and plugin promote its new failures into the
           shared regression directory.
- gpu      200 examples, blobs printed: GPU kernel tests, where each example is cheap.
- repro    explicit examples and the example database only: replays stored failures, generates nothing.

Every profile sets every setting that matters, so Hypothesis's own auto-loaded `ci` profile
(`CI=true`: derandomize, no database) never leaks in, and none has a deadline: timings under xdist or
on a loaded CI box are no finding. Runs are made deterministic by an explicit seed (`--seed`; the CLI draws a
new one per run when none is given), not by `derandomize`, which would forbid the regression database.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis.database import ExampleDatabase

# The explain phase re-runs a failure hundreds of times to annotate it; the bug report does that job.
_SEARCH = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

_SUPPRESSED = ("too_slow", "data_too_large", "filter_too_much", "function_scoped_fixture", "differing_executors")

_BASE = settings(
    deadline=None,
    derandomize=False,
    database=None,  # a run passes its RegressionStore's database explicitly
    report_multiple_bugs=False,
    print_blob=False,
    verbosity=Verbosity.normal,
    phases=_SEARCH,
    # By name, so a Hypothesis that lacks one of them (an older one on a GPU machine) still imports this.
    suppress_health_check=[HealthCheck[n] for n in _SUPPRESSED if n in HealthCheck.__members__],
)

PROFILES: dict[str, settings] = {
    "dev": settings(_BASE, max_examples=25),
    "ci": settings(_BASE, max_examples=50, print_blob=True),
    "nightly": settings(_BASE, max_examples=1000),
    "gpu": settings(_BASE, max_examples=200, print_blob=True),
    "repro": settings(_BASE, max_examples=1, phases=(Phase.explicit, Phase.reuse)),
}
DEFAULT_PROFILE = "dev"
# Each profile's wall limit for one case, in seconds (`--case-timeout` overrides it): a case still running then
# is stopped and reported as the target's error, so one hang cannot hold the run forever.
CASE_SECONDS: dict[str, float] = {"dev": 600, "ci": 900, "nightly": 7200, "gpu": 1800, "repro": 600}
# The profile whose new failures go into the shared regression directory.
PROMOTING_PROFILE = "nightly"


def profile_settings(name: str, max_examples: int | None = None,
                     database: ExampleDatabase | None = None) -> settings:
    """The named profile; `max_examples` overrides its example count and `database` is the one to use."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    base = PROFILES[name]
    if max_examples:
        base = settings(base, max_examples=max_examples)
    return settings(base, database=database)


def register_hypothesis_profiles(max_examples: int | None = None) -> None:
    """Register every profile with Hypothesis as `moe-<name>` (with `max_examples` overriding each
    one's count when given), so plain `@given` tests can load them."""
    for name in PROFILES:
        settings.register_profile(f"moe-{name}", profile_settings(name, max_examples))
