"""capturer-shape: the routed-experts buffer is (max_tokens, num_moe_layers, top_k) for any spelling."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import DEFAULT_FAMILIES, Family
from harness.strategies.configs import SYNTHETIC, ConfigCase, config_cases
from harness.targets.base import Target
from harness.verdict import PropertyViolation, TargetError


def check_capturer(target: Target, family: Family, drawn: tuple[ConfigCase, int]) -> None:
    case, max_tokens = drawn
    assert target.capturer is not None
    buffer = call_target("capturer(config, max_tokens)", target.capturer, case.config, max_tokens)
    want = (max_tokens, case.num_moe_layers, case.top_k)
    if tuple(buffer.shape) != want:
        raise PropertyViolation(f"capturer buffer has shape {tuple(buffer.shape)}, expected {want}",
                                shape=tuple(buffer.shape), expected=want)


def _describe(drawn: tuple[ConfigCase, int]) -> dict[str, Any]:
    case, max_tokens = drawn
    return {**case.description, "max_tokens": max_tokens}


def _prop(target: Target, family: Family, drawn: tuple[ConfigCase, int]) -> None:
    try:
        check_capturer(target, family, drawn)
    except TargetError as exc:
        # An AttributeError on a valid config is exactly seed 001: say which spelling it missed.
        case = drawn[0]
        raise PropertyViolation(f"capturer failed on a valid config: {exc.message}",
                                spelling=case.description.get("top_k_spelling", case.description.get("set"))) from exc


CAPTURER = Check(
    name="capturer-shape",
    capability="capturer",
    summary="buffer shape (max_tokens, num_moe_layers, top_k) for every spelling and nesting",
    strategy=lambda target, family: st.tuples(config_cases(family.name), st.integers(1, 64)),
    prop=_prop,
    describe=_describe,
    families=(*DEFAULT_FAMILIES, SYNTHETIC),
)
