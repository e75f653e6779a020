"""What a check is: a property over one capability of a target, with the strategy that feeds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hypothesis import strategies as st

from harness.families import Family
from harness.targets.base import Target
from harness.verdict import CheckSkipped, SkipReason, TargetError, harness_limit, not_applicable, raised_at
from reference.families import UNSUPPORTED_FAMILIES, facts_named

Cap = TypeVar("Cap")


@dataclass(frozen=True)
class Check(Generic[Cap]):
    """A property written once and run over targets × families.

    The fields take the target's capability named by `capability`, already looked up: `draws(cap, family)`
    draws examples; `holds(cap, family, example)` returns None when the property holds and raises
    PropertyViolation (or TargetError) when it does not; `describe(example)` renders the example as the
    readable counterexample; `excludes(cap, family, target_name)` says why the check does not apply to
    the family (the target's name is passed for that message only), or None.

    The engine calls the methods `strategy(target, family)` and `prop(target, family, example)`, which
    look the capability up and hand it on.
    """

    name: str
    capability: str
    summary: str
    draws: Callable[[Cap, Family], st.SearchStrategy[Any]]
    holds: Callable[[Cap, Family, Any], None]
    describe: Callable[[Any], dict[str, Any]]
    excludes: Callable[[Cap, Family, str], str | None] = lambda cap, family, target_name: None
    # The families it runs over when it is about some families by definition; None: every family the target
    # serves (`target.families`, else DEFAULT_FAMILIES).
    families: tuple[str, ...] | None = None
    # Pseudo-families it also runs over on every target (the synthetic "new family" config, say).
    extra_families: tuple[str, ...] = ()
    # Whether its property needs the reference's resolution of the family (its MoESpec): a family the
    # reference does not model (reference/families.py says why) is then a harness-limit skip.
    needs_spec: bool = True
    # Example counts per profile for a check whose every example builds a model (an explicit
    # --max-examples wins; a profile not named here keeps its own count).
    example_caps: tuple[tuple[str, int], ...] = ()

    def capability_of(self, target: Target) -> Cap:
        """The target's capability this check judges; CheckSkipped when the target provides none."""
        capability = getattr(target, self.capability)
        if capability is None:
            raise CheckSkipped(self._missing(target))
        return capability  # type: ignore[no-any-return]

    def strategy(self, target: Target, family: Family) -> st.SearchStrategy[Any]:
        """The examples to draw for target × family."""
        return self.draws(self.capability_of(target), family)

    def prop(self, target: Target, family: Family, example: Any) -> None:
        """Judge one example on target × family: None when the property holds, else raises."""
        self.holds(self.capability_of(target), family, example)

    def applies(self, target: Target, family: Family) -> str | None:
        """Why this check does not apply to target × family (the target has the capability), or None."""
        return self.excludes(self.capability_of(target), family, target.name)

    def max_examples(self, profile: str, requested: int | None, target: Target | None = None) -> int | None:
        """The example count to run under `profile`: `requested` if given, else the cap the target's
        capability declares (`example_caps` on it: every example builds a model, say), else this check's."""
        own = getattr(getattr(target, self.capability, None), "example_caps", ())
        return requested or dict(own).get(profile) or dict(self.example_caps).get(profile)

    def skip_reason(self, target: Target, family: Family) -> str | None:
        """Why this check cannot run on target × family, or None when it can."""
        capability = getattr(target, self.capability)
        if capability is None:
            return self._missing(target)
        if self.needs_spec and family.name in UNSUPPORTED_FAMILIES:
            facts = facts_named(family.name)
            kind = not_applicable if facts is not None and not facts.routed_experts else harness_limit
            return kind(f"the reference does not model {family.name}: {UNSUPPORTED_FAMILIES[family.name]}")
        skip = getattr(capability, "skip", None)
        return (skip(family.name) if skip else None) or self.applies(target, family)

    def _missing(self, target: Target) -> SkipReason:
        return not_applicable(f"target {target.name!r} provides no {self.capability!r} capability")


def call_target(what: str, fn: Callable[..., Any], *args: Any, returns: type | tuple[type, ...] | None = None,
                passes: tuple[type[BaseException], ...] = (), **kwargs: Any) -> Any:
    """Call into the target; anything it raises (SystemExit too) becomes a TargetError naming `what` and the
    line it was raised at, except `passes` (the exceptions its capability's contract has it raise, which the
    check judges). With `returns` (a type, or a tuple of types for a tuple of that many values), a value of
    another form is the target's error too, not a crash in the check that unpacks it."""
    judged: tuple[type[BaseException], ...] = (CheckSkipped, *passes)
    try:
        value = fn(*args, **kwargs)
    except judged:
        raise
    except (Exception, SystemExit) as exc:
        raise TargetError(f"{what} raised {type(exc).__name__}: {exc} (at {raised_at(exc)})", exc) from exc
    if returns is not None and not _has_form(value, returns):
        names = (" and ".join(t.__name__ for t in returns) if isinstance(returns, tuple) else returns.__name__)
        shown = (f"a {type(value).__name__} of {', '.join(type(v).__name__ for v in value)}"
                 if isinstance(value, tuple | list) else repr(value)[:80])
        raise TargetError(f"{what} returned {shown}; expected {names}", TypeError(what))
    return value


def _has_form(value: Any, returns: type | tuple[type, ...]) -> bool:
    if not isinstance(returns, tuple):
        return isinstance(value, returns)
    return (isinstance(value, tuple | list) and len(value) == len(returns)
            and all(isinstance(v, t) for v, t in zip(value, returns, strict=True)))

