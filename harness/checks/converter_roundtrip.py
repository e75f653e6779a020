"""converter-roundtrip: a state-dict converter between Hugging Face checkpoints and an engine gives back every tensor.

From a state dict on the converter's origin side (the Hugging Face block or checkpoint, or the engine's model, every
tensor distinct), converted there and back, properties:
- HF -> engine -> HF and engine -> HF -> engine give back the same names holding the same tensors, exactly: a
  tensor the converter drops (a trained weight lost on export), renames on the way back (a checkpoint the model no
  longer loads) or moves (gate and up swapped, experts reordered) is a violation;
- a converter that passes the keys it has no rule for through unchanged (a remap over names) is idempotent:
  converting its own output again changes nothing (a rule re-applied to what it produced doubles a segment).
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.targets.base import ConverterCap, StateDict, StateDictConverter
from harness.verdict import PropertyViolation

SHOWN = 6  # names listed per kind of difference; the count says how many there are


def _convert(converter: StateDictConverter, direction: str, state: StateDict) -> StateDict:
    fn = converter.from_hf if direction == "from_hf" else converter.to_hf
    return call_target(f"{converter.name}.{direction}(state_dict)", fn, dict(state),  # type: ignore[no-any-return]
                       returns=dict)


def differences(want: StateDict, got: StateDict) -> dict[str, Any]:
    """What `got` lacks, adds and holds differently from `want` (names, shown up to SHOWN each, with counts)."""
    lost = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(k for k in set(want) & set(got)
                     if not (isinstance(got[k], torch.Tensor) and got[k].shape == want[k].shape
                             and torch.equal(got[k], want[k])))
    out: dict[str, Any] = {}
    for kind, names in (("lost", lost), ("added", extra), ("changed", changed)):
        if names:
            out[kind] = names[:SHOWN]
            out[f"{kind}_count"] = len(names)
    return out


def _failure(converter: StateDictConverter, trip: str, want: StateDict, got: StateDict) -> dict[str, Any] | None:
    """The failure of one trip (what it lost, added and changed), or None when it gave back `want` exactly."""
    diff = differences(want, got)
    if not diff:
        return None
    kinds = ", ".join(f"{diff[k + '_count']} {k}" for k in ("lost", "added", "changed") if k in diff)
    return {"converter": converter.name, "trip": trip, "counts": f"{kinds} of {len(want)} tensors", **diff}


def check_converters(cap: ConverterCap, family: Family, seed: int) -> None:
    """Every converter of the family gives back every tensor both ways, and is idempotent where it passes through.
    Every converter is judged, so one converter's failure never hides another's: all of them are reported."""
    converters = call_target(f"converters({family.name!r})", cap.converters, family.name, returns=tuple)
    failures = [f for converter in converters for f in _failures(converter, seed)]
    if failures:
        first, *others = failures
        shown = "; ".join(f"{f['converter']}: {f['trip']} ({f['counts']})" for f in failures)
        details: dict[str, Any] = {**first, **({"other_failures": others} if others else {})}
        raise PropertyViolation(f"a conversion does not give back what it started from: {shown}", **details)


def _failures(converter: StateDictConverter, seed: int) -> list[dict[str, Any]]:
    there, back = ("from_hf", "to_hf") if converter.origin == "hf" else ("to_hf", "from_hf")
    start, other = ("HF", "engine") if converter.origin == "hf" else ("engine", "HF")
    first = call_target(f"{converter.name}.state({seed})", converter.state, seed, returns=dict)
    converted = _convert(converter, there, first)
    returned = _convert(converter, back, converted)
    found = [_failure(converter, f"{start} -> {other} -> {start}", first, returned),
             _failure(converter, f"{other} -> {start} -> {other}", converted, _convert(converter, there, returned))]
    if converter.passes_through:
        found += [_failure(converter, f"{direction} applied to its own output (keys it has no rule for pass through)",
                           state, _convert(converter, direction, state))
                  for direction, state in ((there, converted), (back, returned))]
    return [f for f in found if f is not None]


CONVERTER_ROUNDTRIP: Check[ConverterCap] = Check(
    name="converter-roundtrip",
    capability="converter",
    summary="HF -> engine -> HF and engine -> HF -> engine give back every tensor, exactly; pass-through "
            "converters are idempotent",
    draws=lambda cap, family: st.integers(0, 2**16),
    holds=check_converters,
    describe=lambda seed: {"seed": seed},
    needs_spec=False,
)
