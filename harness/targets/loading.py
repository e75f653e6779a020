"""Turn a target name or a `package.module:object` spec into a Target, or say exactly why not.

Three outcomes besides a Target, each its own exception so callers can treat them differently:
- UnknownTarget: the name or spec is wrong (a usage error); the message lists the valid names and how
  to write a spec.
- TargetUnavailable: the target exists but a dependency it needs is not installed here (vLLM on a
  machine without it); runs report it as skipped with the reason.
- TargetLoadError: the target's own code raised while loading (a bug in the adapter); runs report it
  as an error.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from harness.verdict import raised_at

if TYPE_CHECKING:  # the module that defines Target imports torch: loaded when a target is made, not to list names
    from harness.targets.base import Target

ENTRY_POINT_GROUP = "moe_harness.targets"

Factory = Callable[[], "Target"]


class UnknownTarget(LookupError):
    """No target has this name, or a `module:object` spec does not resolve; the message says how to fix it."""


class TargetUnavailable(Exception):
    """The target exists, but something it imports is not installed here."""


class TargetLoadError(Exception):
    """The target's own code raised while building the Target."""


def entry_point_targets() -> dict[str, Factory]:
    """Targets other installed packages register under the `moe_harness.targets` entry point group.

    Each entry point names a Target or a zero-argument callable returning one; it is imported only
    when the target is loaded, so a package whose dependencies are missing still lists.
    """
    found: dict[str, Factory] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = _entry_point_factory(ep)
    return found


def _entry_point_factory(ep: metadata.EntryPoint) -> Factory:
    def load() -> Target:
        try:
            obj = ep.load()
        except ImportError as exc:
            raise TargetUnavailable(f"entry point {ep.value!r} cannot be imported: {exc}") from exc
        return as_target(obj, f"entry point {ep.name} = {ep.value}")

    return load


def resolve(spec: str, registry: Mapping[str, Factory]) -> Target:
    """The Target that `spec` names (a key of `registry`, or `package.module:object`), carrying `spec`."""
    target = _resolve(spec, registry)
    return target if target.spec == spec else dataclasses.replace(target, spec=spec)


def _resolve(spec: str, registry: Mapping[str, Factory]) -> Target:
    if ":" in spec:
        return _from_spec(spec, registry)
    if spec not in registry:
        raise UnknownTarget(f"unknown target {spec!r}; valid targets: {', '.join(registry)} "
                            "(or package.module:object for your own adapter)")
    try:
        return as_target(registry[spec], f"target {spec!r}")
    except (UnknownTarget, TargetUnavailable, TargetLoadError):
        raise
    except ImportError as exc:
        raise TargetUnavailable(f"{type(exc).__name__}: {exc}") from exc


def as_target(obj: Any, where: str) -> Target:
    """`obj` itself when it is a Target, else what calling it with no arguments returns."""
    from harness.targets.base import Target

    if isinstance(obj, Target):
        return obj
    if not callable(obj):
        raise UnknownTarget(f"{where} is a {type(obj).__name__}, not a harness.targets.base.Target "
                            "or a zero-argument callable returning one")
    try:
        made = obj()
    except (ImportError, TargetUnavailable):
        raise  # a missing dependency: the caller reports the target as unavailable
    except (Exception, SystemExit) as exc:
        raise TargetLoadError(f"{where} raised while building the target: {type(exc).__name__}: {exc} "
                              f"(at {raised_at(exc)})") from exc
    if not isinstance(made, Target):
        raise UnknownTarget(f"{where} returned a {type(made).__name__}, not a harness.targets.base.Target")
    return made


def _from_spec(spec: str, registry: Mapping[str, Factory]) -> Target:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UnknownTarget(f"target spec {spec!r} must read package.module:object, e.g. my_engine.moe_adapter:target")
    # Import the way `python -m` would: the current directory first, so an adapter next to the user's
    # checkout loads without installing it (console scripts do not put the cwd on sys.path).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UnknownTarget(
                f"target spec {spec!r}: no module named {exc.name!r}; check the spelling, run from the directory "
                f"that holds it or add that directory to PYTHONPATH (valid names without a spec: {', '.join(registry)})"
            ) from exc
        raise TargetUnavailable(f"module {module_name!r} imports {exc.name!r}, which is not installed") from exc
    except ImportError as exc:
        raise TargetUnavailable(f"module {module_name!r} failed to import: {exc}") from exc
    except (Exception, SystemExit) as exc:
        raise TargetLoadError(f"importing {module_name!r} raised {type(exc).__name__}: {exc} (at {raised_at(exc)})"
                              ) from exc
    from harness.targets.base import Target

    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            offered = sorted(n for n, v in vars(module).items()
                             if not n.startswith("_") and (isinstance(v, Target) or _defined_function(v, module_name)))
            raise UnknownTarget(f"target spec {spec!r}: module {module_name!r} has no attribute {attr!r}; "
                                f"Targets or functions it defines: {', '.join(offered) or 'none'}")
        obj = getattr(obj, part)
    try:
        return as_target(obj, spec)
    except ImportError as exc:
        raise TargetUnavailable(f"{spec}: {type(exc).__name__}: {exc}") from exc


def _defined_function(value: Any, module_name: str) -> bool:
    return callable(value) and not isinstance(value, type) and getattr(value, "__module__", None) == module_name
