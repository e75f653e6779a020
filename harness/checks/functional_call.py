"""functional-call: substituting any parameter or float buffer reaches the output, as a rebuild does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch.func import functional_call

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.targets.base import Target
from harness.tolerances import Tolerance, assert_close, tolerance_for
from harness.verdict import PropertyViolation
from reference.config import MoESpec


@dataclass(frozen=True)
class SubstitutionCase:
    tokens: int
    seed: int


def substitutable(block: torch.nn.Module) -> list[str]:
    """Names of every parameter and floating-point buffer of the block."""
    names = [n for n, _ in block.named_parameters()]
    names += [n for n, b in block.named_buffers() if b.is_floating_point()]
    return names


def _new_value(tensor: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
    # Sign-mixed values well off the original: selection biases and scales must move the routing.
    # A scalar has no spread (std() would warn and give nan): take 1, as for a constant tensor's nan.
    spread = tensor.double().std().nan_to_num(1.0) + 1.0 if tensor.numel() > 1 else 2.0
    return (torch.randn(tensor.shape, generator=gen, dtype=torch.float64) * spread * scale).to(tensor.dtype)


# A tensor that only steers selection (a bias) changes the output only when it changes some pick, so
# a value that happens to keep every pick is retried at larger scales before "no effect" is concluded.
SCALES = (1.0, 10.0, 100.0)


def check_functional_call(target: Target, family: Family, case: SubstitutionCase) -> None:
    assert target.block is not None
    spec = family.spec
    block = call_target("build block", target.block.build, spec, case.seed)
    gen = torch.Generator().manual_seed(case.seed)
    x = torch.randn(case.tokens, spec.hidden_size, generator=gen)
    tol = tolerance_for(torch.float32, family.tolerances)
    with torch.no_grad():
        original = call_target("block(x)", block, x)
        tensors = dict(block.named_parameters()) | dict(block.named_buffers())
        for name in substitutable(block):
            for scale in SCALES:
                value = _new_value(tensors[name], gen, scale)
                substituted = call_target(f"functional_call(block, {{{name!r}: new}}, x)",
                                          functional_call, block, {name: value}, (x,))
                _assert_like_rebuilt(target, spec, case.seed, name, value, x, substituted, original, tol)
                if not torch.equal(substituted, original):
                    break
            else:
                raise PropertyViolation(f"parameter {name!r} changes nothing in the output "
                                        f"(new values at scales {', '.join(map(str, SCALES))})", parameter=name)


def _assert_like_rebuilt(target: Target, spec: MoESpec, seed: int, name: str, value: torch.Tensor,
                         x: torch.Tensor, substituted: torch.Tensor, original: torch.Tensor, tol: Tolerance) -> None:
    assert target.block is not None
    rebuilt = call_target("build block", target.block.build, spec, seed)
    # Written in place, not through load_state_dict, which never sees non-persistent buffers.
    owner, _, leaf = name.rpartition(".")
    getattr(rebuilt.get_submodule(owner), leaf).copy_(value)
    expected = call_target("rebuilt block(x)", rebuilt, x)
    try:
        assert_close(substituted, expected, tol, f"functional_call substitution of {name!r}")
    except PropertyViolation as v:
        reached = not torch.equal(substituted, original)
        raise PropertyViolation(
            f"functional_call substitution of {name!r} does not act like a block built with that value"
            + ("" if reached else " (the substituted value never reached the output)"),
            tolerance=v.tolerance, parameter=name, **v.details) from None


FUNCTIONAL_CALL = Check(
    name="functional-call",
    capability="block",
    summary="functional_call with a new value of any parameter/float buffer == block built with it, != original",
    strategy=lambda target, family: st.builds(SubstitutionCase, tokens=st.integers(4, 16),
                                              seed=st.integers(0, 2**16)),
    prop=check_functional_call,
    describe=lambda case: {"tokens": case.tokens, "seed": case.seed},
    applies=lambda target, family: (
        None if target.block is None or target.block.families is None or family.name in target.block.families
        else f"{target.name} builds blocks only for {', '.join(target.block.families)}"),
)

