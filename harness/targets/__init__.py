"""Targets by name: the built-in ones here; more arrive in later issues (transformers, vllm, adapters)."""

from __future__ import annotations

from collections.abc import Callable

from harness.targets import reference_target, seeds
from harness.targets.base import Target

BUILTIN: dict[str, Callable[[], Target]] = {
    "reference": reference_target.make_target,
    "seeds-buggy": seeds.make_buggy,
    "seeds-lookahead": seeds.make_lookahead,
    "seeds-fixed": seeds.make_fixed,
}
DEFAULT_TARGETS = ("reference", "seeds-fixed")


class UnknownTarget(KeyError):
    pass


def load_target(name: str) -> Target:
    """The target called `name`; UnknownTarget lists the valid names."""
    if name not in BUILTIN:
        raise UnknownTarget(f"unknown target {name!r}; valid targets: {', '.join(BUILTIN)}")
    return BUILTIN[name]()
