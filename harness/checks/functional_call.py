"""functional-call: substituting any parameter or float buffer reaches the output, as a rebuild does; a buffer the
target declares inert (`BlockCap.inert`: a training statistic the forward never reads) changes nothing at all; and the
block holds its own values again once the call returns (torch restores a module reachable under two names only once,
pytorch/pytorch#164759, so an engine that registers a module twice has its values overwritten by the call).
A block the call left altered is built again, so that the substitutions after it are judged on a sound block; the
leak is reported once every substitution has been judged."""

from __future__ import annotations

import torch
from torch.func import functional_call

from harness.assertions import assert_close
from harness.checks.base import Check, call_target
from harness.checks.block_parity import builds_only_for
from harness.families import Family
from harness.strategies.block_inputs import SubstitutionExample, substitution_examples
from harness.targets.base import BlockCap
from harness.tolerances import Tolerance, tolerance_for
from harness.verdict import PropertyViolation
from reference.config import MoESpec


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


def check_functional_call(block_cap: BlockCap, family: Family, example: SubstitutionExample) -> None:
    spec = family.spec
    block = call_target("build block", block_cap.build, spec, example.seed)
    gen = torch.Generator().manual_seed(example.seed)
    x = torch.randn(example.tokens, spec.hidden_size, generator=gen)
    tol = tolerance_for(torch.float32, family.tolerances)
    leaked: list[str] = []
    with torch.no_grad():
        original = call_target("block(x)", block, x, returns=torch.Tensor)
        for name in substitutable(block):
            tensors = dict(block.named_parameters()) | dict(block.named_buffers())
            if name in block_cap.inert:
                _assert_inert(block, name, _new_value(tensors[name], gen, SCALES[-1]), x, original,
                              block_cap.inert[name])
                continue
            for scale in SCALES:
                value = _new_value(tensors[name], gen, scale)
                held = tensors[name].clone()
                substituted = call_target(f"functional_call(block, {{{name!r}: new}}, x)",
                                          functional_call, block, {name: value}, (x,))
                if not torch.equal(_tensor_at(block, name), held):
                    leaked.append(name)
                    block = call_target("build block", block_cap.build, spec, example.seed)
                _assert_like_rebuilt(block_cap, spec, example.seed, name, value, x, substituted, original, tol)
                if not torch.equal(substituted, original):
                    break
            else:
                raise PropertyViolation(f"parameter {name!r} changes nothing in the output "
                                        f"(new values at scales {', '.join(map(str, SCALES))})", parameter=name)
    if leaked:
        held_as = _names_of(block, leaked[0])
        raise PropertyViolation(f"functional_call left the new value of {leaked[0]!r} in the block after it returned "
                                f"(the block holds that tensor as {', '.join(held_as)}; {len(leaked)} tensor(s) left "
                                "altered)", parameter=leaked[0], held_as=", ".join(held_as),
                                left_altered=", ".join(leaked))


def _tensor_at(block: torch.nn.Module, name: str) -> torch.Tensor:
    owner, _, leaf = name.rpartition(".")
    tensor: torch.Tensor = getattr(block.get_submodule(owner), leaf)
    return tensor


def _names_of(block: torch.nn.Module, name: str) -> list[str]:
    """Every name the block holds that tensor under (a module registered twice gives it several)."""
    target = _tensor_at(block, name)
    return [n for n, t in [*block.named_parameters(remove_duplicate=False), *block.named_buffers(remove_duplicate=False)]
            if t is target]


def _assert_inert(block: torch.nn.Module, name: str, value: torch.Tensor, x: torch.Tensor, original: torch.Tensor,
                  why: str) -> None:
    """A buffer declared inert changes nothing: the output with a new value of it is the original, exactly."""
    substituted = call_target(f"functional_call(block, {{{name!r}: new}}, x)", functional_call, block, {name: value},
                              (x,))
    if not torch.equal(substituted, original):
        raise PropertyViolation(f"buffer {name!r} is declared inert ({why}) but a new value of it changes the output",
                                parameter=name, max_change=float((substituted - original).abs().max()))


def _assert_like_rebuilt(block_cap: BlockCap, spec: MoESpec, seed: int, name: str, value: torch.Tensor,
                         x: torch.Tensor, substituted: torch.Tensor, original: torch.Tensor, tol: Tolerance) -> None:
    rebuilt = call_target("build block", block_cap.build, spec, seed)
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


FUNCTIONAL_CALL: Check[BlockCap] = Check(
    name="functional-call",
    capability="block",
    summary="functional_call with a new value of any parameter/float buffer == block built with it, != original",
    draws=lambda block_cap, family: substitution_examples(),
    holds=check_functional_call,
    describe=lambda example: {"tokens": example.tokens, "seed": example.seed},
    excludes=builds_only_for,
)
