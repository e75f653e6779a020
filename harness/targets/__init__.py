"""Targets by name: the built-in ones here, ones other packages register under the `moe_harness.targets`
entry point group, and a user's adapter given as `package.module:object` (see `loading`)."""

from __future__ import annotations

from collections.abc import Callable

from harness.targets import loading, reference, seeds, transformers, triton, vllm
from harness.targets.base import Target
from harness.targets.loading import TargetLoadError, TargetUnavailable, UnknownTarget

BUILTIN: dict[str, Callable[[], Target]] = {
    "reference": reference.make_target,
    "seeds-buggy": seeds.make_buggy,
    "seeds-lookahead": seeds.make_lookahead,
    "seeds-fixed": seeds.make_fixed,
    "reference-triton": triton.make_target,
    "transformers": transformers.make_target,
    "vllm": vllm.make_target,  # TargetUnavailable, with the reason, where vllm does not import
}
# What `moe-harness run` checks when no --target is given: the oracle's self-check, then every library target
# (one whose library is not installed here is one SKIP line saying so).
DEFAULT_TARGETS = ("reference", "seeds-fixed", "transformers", "vllm")


__all__ = ["BUILTIN", "DEFAULT_TARGETS", "TargetLoadError", "TargetUnavailable", "UnknownTarget",
           "load_target", "registered_targets"]


def registered_targets() -> dict[str, Callable[[], Target]]:
    """Every target with a name: the built-in ones, then entry points (a built-in name wins)."""
    return {**BUILTIN, **{n: f for n, f in loading.entry_point_targets().items() if n not in BUILTIN}}


def load_target(spec: str) -> Target:
    """The target a name or `package.module:object` spec gives.

    Raises UnknownTarget (a wrong name or spec; the message lists the valid names), TargetUnavailable
    (a dependency is not installed here) or TargetLoadError (the target's code raised while loading).
    """
    return loading.resolve(spec, registered_targets())
