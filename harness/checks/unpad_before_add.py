"""unpad-before-add: a padded runner trims the routed output before adding shared experts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from harness.assertions import assert_close
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.padding import PaddingExample, padding_examples
from harness.tolerances import tolerance_for
from harness.verdict import PropertyViolation
from reference.moe import build_block, pad_to

PaddedRunner = Callable[[Any, int], Callable[[torch.Tensor], torch.Tensor]]


def check_unpad(padded_runner: PaddedRunner, family: Family, example: PaddingExample) -> None:
    dim = example.dim
    spec = replace(family.spec, hidden_size=dim.hidden)
    block = build_block(spec, example.seed, dtype=dim.dtype)
    gen = torch.Generator().manual_seed(example.seed)
    x = torch.randn(example.tokens, dim.hidden, generator=gen).to(dim.dtype)
    runner = call_target(f"padded_runner(block, alignment={dim.elements})", padded_runner, block, dim.elements)
    with torch.no_grad():
        out = call_target("runner(x)", runner, x)
        expected = block(x)
    if out.shape != x.shape:
        raise PropertyViolation(f"output shape {tuple(out.shape)} != input shape {tuple(x.shape)} "
                                f"(hidden {dim.hidden} padded to {pad_to(dim.hidden, dim.elements)})")
    tol = tolerance_for(dim.dtype, family.tolerances)
    assert_close(out, expected, tol, "padded runner output vs shared + routed computed without padding")
    if pad_to(dim.hidden, dim.elements) == dim.hidden and not torch.equal(out, expected):
        raise PropertyViolation("padding to an alignment the hidden size already meets changed the output")


def _describe(example: PaddingExample) -> dict[str, Any]:
    dim = example.dim
    return {"hidden": dim.hidden, "alignment": dim.alignment, "alignment_elements": dim.elements,
            "dtype": str(dim.dtype), "padded_hidden": pad_to(dim.hidden, dim.elements), "tokens": example.tokens,
            "seed": example.seed}


UNPAD: Check[PaddedRunner] = Check(
    name="unpad-before-add",
    capability="padded_runner",
    summary="output hidden == input hidden; out == shared + routed without padding; aligned sizes untouched",
    draws=lambda padded_runner, family: padding_examples(),
    holds=check_unpad,
    describe=_describe,
    excludes=lambda padded_runner, family, target_name: None if family.spec.shared_combine != "none"
    else f"{family.name} has no shared experts: nothing is added after the routed output",
)
