"""Broken wrappers around the real transformers target, for tests that show a check catches a defect."""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.targets import load_target
from harness.targets.base import Target


def transformers_with(capability: str, **changes: Any) -> Target:
    """The installed transformers target, renamed and without known failures, with parts of one
    capability replaced (`changes`): everything else is the real thing."""
    real = load_target("transformers")
    cap = getattr(real, capability)
    assert cap is not None, f"transformers provides no {capability!r} capability"
    return dataclasses.replace(real, name="broken-transformers", known_failures=[],
                               **{capability: dataclasses.replace(cap, **changes)})
