"""Targets by name: the built-in ones here, ones other packages register under the `moe_harness.targets`
entry point group, and a user's adapter given as `package.module:object` (see `loading`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.targets import loading
from harness.targets.loading import TargetLoadError, TargetUnavailable, UnknownTarget

if TYPE_CHECKING:
    from harness.targets.base import Target


def _factory(module: str, function: str, **kwargs: Any) -> Callable[[], Target]:
    """`module.function(**kwargs)`, imported only when the target is made: listing names imports no library."""

    def make() -> Target:
        return getattr(importlib.import_module(module), function)(**kwargs)

    return make


BUILTIN: dict[str, Callable[[], Target]] = {
    "reference": _factory("harness.targets.reference", "make_target"),
    "seeds-buggy": _factory("harness.targets.seeds", "make_buggy"),
    "seeds-lookahead": _factory("harness.targets.seeds", "make_lookahead"),
    "seeds-fixed": _factory("harness.targets.seeds", "make_fixed"),
    "reference-triton": _factory("harness.targets.triton", "make_target"),
    "transformers": _factory("harness.targets.transformers", "make_target"),
    # TargetUnavailable, with the reason, where vllm does not import; each runs in its own environment
    "vllm": _factory("harness.targets.vllm", "make_target"),
    "vllm-newest": _factory("harness.targets.vllm", "make_target", name="vllm-newest"),
    "torchtitan": _factory("harness.targets.torchtitan", "make_target"),
    "mlx-lm": _factory("harness.targets.mlx_lm", "make_target"),
    "sglang": _factory("harness.targets.sglang", "make_target"),
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
