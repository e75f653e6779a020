"""capturer-shape: the routed-experts buffer is (max_tokens, layers, top_k) for any spelling: `layers` is the MoE
layer count, or every decoder layer's for a capturer that declares `layer_axis = "decoder"` (it indexes its buffer by
the decoder layer's own index, dense layers holding no routing: vLLM's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.configs import SYNTHETIC, ConfigExample, capture_requests
from harness.verdict import PropertyViolation, TargetError

Capturer = Callable[[Any, int], torch.Tensor]


def check_capturer(capturer: Capturer, family: Family, drawn: tuple[ConfigExample, int]) -> None:
    example, max_tokens = drawn
    buffer = call_target("capturer(config, max_tokens)", capturer, example.config, max_tokens, returns=torch.Tensor)
    by_decoder_layer = getattr(capturer, "layer_axis", "moe") == "decoder"
    want = (max_tokens, example.num_layers if by_decoder_layer else example.num_moe_layers, example.top_k)
    if example.num_moe_layers == 0 and buffer.dim() == 3 and tuple(buffer.shape[:2]) == want[:2]:
        return  # no MoE layer: an empty buffer, whatever its last dim says
    if tuple(buffer.shape) != want:
        axis = "every decoder layer" if by_decoder_layer else "the MoE layers"
        raise PropertyViolation(f"capturer buffer has shape {tuple(buffer.shape)}, expected {want} (one slot per "
                                f"token, {axis}, expert per token)", shape=tuple(buffer.shape), expected=want)


def _describe(drawn: tuple[ConfigExample, int]) -> dict[str, Any]:
    example, max_tokens = drawn
    return {**example.description, "max_tokens": max_tokens}


def _holds(capturer: Capturer, family: Family, drawn: tuple[ConfigExample, int]) -> None:
    try:
        check_capturer(capturer, family, drawn)
    except TargetError as exc:
        # An AttributeError on a valid config is exactly seed 001: say which spelling it missed.
        example = drawn[0]
        raise PropertyViolation(f"capturer failed on a valid config: {exc.message}",
                                spelling=example.description.get("top_k_spelling", example.description.get("set")),
                                error=exc.message) from exc


CAPTURER: Check[Capturer] = Check(
    name="capturer-shape",
    capability="capturer",
    summary="buffer shape (max_tokens, MoE layers or every decoder layer as declared, top_k) for every spelling and "
            "nesting",
    draws=lambda capturer, family: capture_requests(family.name),
    holds=_holds,
    describe=_describe,
    extra_families=(SYNTHETIC,),
)
