"""What a check is: a property over one capability of a target, with the strategy that feeds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.families import Family
from harness.targets.base import Target
from harness.verdict import CheckSkipped, TargetError


@dataclass(frozen=True)
class Check:
    """A property written once and run over targets × families.

    `strategy(target, family)` draws examples; `prop(target, family, example)` returns None when the
    property holds and raises PropertyViolation (or TargetError) when it does not; `describe(example)`
    renders the example as the readable counterexample.
    """

    name: str
    capability: str
    summary: str
    strategy: Callable[[Target, Family], st.SearchStrategy[Any]]
    prop: Callable[[Target, Family, Any], None]
    describe: Callable[[Any], dict[str, Any]]
    applies: Callable[[Target, Family], str | None] = lambda target, family: None
    # The families it runs over by default; None means DEFAULT_FAMILIES.
    families: tuple[str, ...] | None = None
    # Example counts per profile for a check whose every example builds a model (an explicit
    # --max-examples wins; a profile not named here keeps its own count).
    example_caps: tuple[tuple[str, int], ...] = ()

    def max_examples(self, profile: str, requested: int | None) -> int | None:
        """The example count to run under `profile`: `requested` if given, else this check's cap, if any."""
        return requested or dict(self.example_caps).get(profile)

    def skip_reason(self, target: Target, family: Family) -> str | None:
        """Why this check cannot run on target × family, or None when it can."""
        capability = getattr(target, self.capability)
        if capability is None:
            return f"target {target.name!r} provides no {self.capability!r} capability"
        skip = getattr(capability, "skip", None)
        return (skip(family.name) if skip else None) or self.applies(target, family)


def call_target(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call into the target; anything it raises becomes a TargetError naming `what`."""
    try:
        return fn(*args, **kwargs)
    except CheckSkipped:
        raise
    except Exception as exc:
        raise TargetError(f"{what} raised {type(exc).__name__}: {exc}", exc) from exc
