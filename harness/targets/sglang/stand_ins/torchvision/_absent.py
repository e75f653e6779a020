"""A stand-in for torchvision, which is not installable beside the CPU torch 2.13 here.

SGLang imports torchvision's image transforms at import time from its multimodal code; the harness never runs
that code. Every name resolves to a placeholder that raises when it is used, so an import succeeds and a use
says why it cannot work. Not code under test.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.0.0+moe-harness-stand-in"


class Absent:
    """A torchvision name that cannot be used here; any use raises with that name."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Absent:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Absent(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name}: torchvision is a stand-in in this environment (moe-harness); "
                           "the harness does not run image transforms")

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


def names(module: str) -> Any:
    """A module-level __getattr__ giving placeholders for `module`'s names."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Absent(f"{module}.{name}")

    return __getattr__
