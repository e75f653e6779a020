"""Hypothesis profiles, registered in one place and chosen by name."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(
    deadline=None,  # no timing flakiness under xdist or a loaded CI box
    database=None,  # runs are reproduced by --seed; a shared database arrives with the replay command
    report_multiple_bugs=False,
    # The explain phase re-runs a failure hundreds of times to annotate it; the report does that job.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)

PROFILES: dict[str, settings] = {
    "dev": settings(max_examples=25, **_COMMON),
    "ci": settings(max_examples=50, print_blob=True, **_COMMON),
    "nightly": settings(max_examples=1000, **_COMMON),
    "repro": settings(settings(max_examples=1, **_COMMON), phases=[Phase.explicit, Phase.reuse]),
}


def profile_settings(name: str, max_examples: int | None = None) -> settings:
    """The named profile, with `max_examples` overriding its example count when given."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    base = PROFILES[name]
    return settings(base, max_examples=max_examples) if max_examples else base
