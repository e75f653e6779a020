"""remap-idempotence: a checkpoint-key remap applied twice equals once, and sends each key to its own parameter's
name (key by key: a permutation of the right names is wrong)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.keys import CheckpointKeys, checkpoint_keys
from harness.targets.base import RemapCap
from harness.verdict import PropertyViolation, not_applicable

_DOUBLED = re.compile(r"(?:^|\.)([A-Za-z_]\w*)\.\1\.")


def doubled_segment(key: str) -> str | None:
    """The first non-numeric segment that repeats back to back (`.moe.moe.`), or None."""
    m = _DOUBLED.search(key)
    return m.group(1) if m else None


def check_remap(cap: RemapCap, family: Family, ckpt: CheckpointKeys) -> None:
    cap = cap.of(family.name)
    keys = ckpt.keys()
    mapped = {k: call_target(f"remap({k!r})", cap.fn, k, returns=str) for k in keys}
    for key, once in mapped.items():
        twice = call_target(f"remap({once!r})", cap.fn, once, returns=str)
        if twice != once:
            raise PropertyViolation("remap is not idempotent: r(r(k)) != r(k)", key=key, once=once, twice=twice)
        seg = doubled_segment(once)
        if seg:
            raise PropertyViolation(f"remap produced a doubled segment '.{seg}.{seg}.'", key=key, remapped=once)
    expected = ckpt.expected()
    for name in expected:
        fixed = call_target(f"remap({name!r})", cap.fn, name)
        if fixed != name:
            raise PropertyViolation("a target name is not a fixed point of the remap", name=name, remapped=fixed)
    counts = Counter(mapped.values())
    collided = [(k, v) for k, v in mapped.items() if counts[v] > 1]
    if collided:
        raise PropertyViolation("remap is not injective over the checkpoint's keys",
                                collisions=[k for k, _ in collided[:4]], remapped=collided[0][1])
    missing = sorted(set(expected) - set(mapped.values()))
    unexpected = sorted(set(mapped.values()) - set(expected))
    if missing or unexpected:
        raise PropertyViolation("remapped keys do not match the expected parameters one to one",
                                missing=missing[:4], unexpected=unexpected[:4])
    # The same set of names can still be a permutation of them (up loaded as down, expert 0 as expert 1).
    for key, want in zip(keys, expected, strict=True):
        if mapped[key] != want:
            raise PropertyViolation("remap sends a key to another parameter's name", key=key, remapped=mapped[key],
                                    expected=want)


def describe(ckpt: CheckpointKeys) -> dict[str, Any]:
    keys = ckpt.keys()
    return {
        "schema": ckpt.schema.id,
        "layers": ckpt.num_layers,
        "experts": ckpt.num_experts,
        "suffixes": list(ckpt.suffixes),
        "already_in_target_form": sorted(ckpt.pre_remapped),
        "first_keys": keys[:3],
    }


def _schemas(cap: RemapCap, family: Family) -> tuple:
    return tuple(s for s in cap.of(family.name).accepts if s.prefix == family.schema.prefix)


def _excludes(cap: RemapCap, family: Family, target_name: str) -> str | None:
    if not _schemas(cap, family):
        return not_applicable(f"{target_name}'s remap accepts no schema with {family.name}'s prefix {family.schema.prefix!r}")
    return None


REMAP: Check[RemapCap] = Check(
    name="remap-idempotence",
    capability="remap",
    summary="r(r(k)) == r(k); target names are fixed points; no doubled segment; injective; one key per parameter",
    draws=lambda cap, family: checkpoint_keys(_schemas(cap, family), cap.of(family.name).produces),
    holds=check_remap,
    describe=describe,
    excludes=_excludes,
    needs_spec=False,
)
