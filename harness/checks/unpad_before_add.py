"""unpad-before-add: a padded runner trims the routed output before adding shared experts."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.padding import PaddedDim, padded_dims
from harness.targets.base import Target
from harness.tolerances import assert_close, tolerance_for
from harness.verdict import PropertyViolation
from reference.moe import build_block, pad_to


@dataclass(frozen=True)
class PaddingCase:
    dim: PaddedDim
    tokens: int
    seed: int


def check_unpad(target: Target, family: Family, case: PaddingCase) -> None:
    assert target.padded_runner is not None
    dim = case.dim
    spec = replace(family.spec, hidden_size=dim.hidden)
    block = build_block(spec, case.seed, dtype=dim.dtype)
    x = torch.randn(case.tokens, dim.hidden, generator=torch.Generator().manual_seed(case.seed)).to(dim.dtype)
    runner = call_target(f"padded_runner(block, alignment={dim.elements})", target.padded_runner, block, dim.elements)
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


UNPAD = Check(
    name="unpad-before-add",
    capability="padded_runner",
    summary="output hidden == input hidden; out == shared + routed without padding; aligned sizes untouched",
    strategy=lambda target, family: st.builds(PaddingCase, dim=padded_dims(), tokens=st.integers(1, 8),
                                              seed=st.integers(0, 2**16)),
    prop=check_unpad,
    describe=lambda case: {"hidden": case.dim.hidden, "alignment": case.dim.alignment,
                           "alignment_elements": case.dim.elements, "dtype": str(case.dim.dtype),
                           "padded_hidden": pad_to(case.dim.hidden, case.dim.elements), "tokens": case.tokens,
                           "seed": case.seed},
    applies=lambda target, family: None if family.spec.shared_combine != "none"
    else f"{family.name} has no shared experts: nothing is added after the routed output",
)
