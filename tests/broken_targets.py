"""Broken wrappers around the real transformers target, for tests that show a check catches a defect."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from harness.targets import load_target
from harness.targets.base import ConversionCap, Target


def transformers_with(capability: str, **changes: Any) -> Target:
    """The installed transformers target, renamed and without known failures, with parts of one
    capability replaced (`changes`): everything else is the real thing."""
    real = load_target("transformers")
    cap = getattr(real, capability)
    assert cap is not None, f"transformers provides no {capability!r} capability"
    return dataclasses.replace(real, name="broken-transformers", known_failures=[],
                               **{capability: dataclasses.replace(cap, **changes)})


def conversion_with(family: str, **fields: Any) -> ConversionCap:
    """The family's real conversion (transformers' own rules) with some of its parts replaced."""
    from harness.targets.transformers.conversion import family_conversion

    broken = copy.copy(family_conversion(family))
    for name, value in fields.items():
        setattr(broken, name, value)
    rules = broken.rules()
    return ConversionCap(rules=lambda name: rules)
