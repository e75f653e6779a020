"""Checkpoint directories on disk, drawn: any key schema, format, dims, sharding, duplicates and damage.

`checkpoints(...)` draws a `CheckpointPlan` and writes it (see `checkpoint_files`); the example is a
`GeneratedCheckpoint` whose directory is deleted with it. `bad_checkpoints(kind)` writes one and then
breaks one file in a named way, for the loaders' error paths.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from harness.families import tiny_spec
from harness.strategies.checkpoint_files import (
    DIM_UNIT,
    FORMATS,
    CheckpointPlan,
    GeneratedCheckpoint,
    write_checkpoint,
)
from harness.strategies.keys import MAX_LAYERS, expert_counts, layer_counts
from harness.tiny_configs import tiny_config
from reference.checkpoint import NEIGHBOUR_KINDS, SHARED_SPELLINGS, KeySchema

PLAIN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DAMAGE = ("none", "drop", "extra")
# The non-expert kinds drawn beside the always-written router, and the shared expert's spellings ("" none).
NEIGHBOURS = tuple(k for k in NEIGHBOUR_KINDS if k != "router")
SHARED = ("", *SHARED_SPELLINGS)
# A format whose tensors have 8-bit codes repeats fingerprints past 256 slots of one dtype: drawn only while the
# plan has at most this many expert projections per layer set (so every slot keeps a distinct fingerprint).
_EIGHT_BIT_SLOTS = 256
# Hidden sizes are drawn in multiples of this, so that hidden / heads (4 or fewer in a tiny config) stays even:
# a rotary embedding over an odd head width is no real model (YaRN's init refuses it: mistral4 at hidden 20).
HIDDEN_STEP = 8


def _eight_bit(quant: str) -> bool:
    return any(f.dtype is not None and f.dtype.itemsize == 1 for f in FORMATS[quant])


@functools.cache
def _has_dense_layers_knob(family: str) -> bool:
    return "mlp_only_layers" in tiny_config(family).to_dict()


@dataclass(frozen=True)
class FamilyLimits:
    """What a family's config accepts in a plan, found once by asking it (`family_limits`): its leading dense
    layers (a plan needs more layers than that to hold any expert), the fewest experts and most layers its
    validators allow, and whether hidden and expert widths may be drawn (a multimodal config may tie the text
    hidden size to its vision tower, or want it a multiple of the head count); where not, its tiny ones."""

    first_moe_layer: int
    min_experts: int
    max_layers: int
    hidden: int | None  # None: drawn freely; else the one the config accepts
    intermediate: int | None


@functools.cache
def family_limits(family: str) -> FamilyLimits:
    from harness.strategies.checkpoint_files import plan_config

    spec = tiny_spec(family)
    first = min(spec.moe_layers, default=0)
    h0, i0 = spec.hidden_size, spec.intermediate_size

    def accepts(experts: int, layers: int, hidden: int, intermediate: int) -> bool:
        try:
            plan_config(CheckpointPlan(family=family, schema=KeySchema(), num_layers=layers, num_experts=experts,
                                       hidden=hidden, intermediate=intermediate))
        except Exception:  # noqa: BLE001 - a validator refusing the value
            return False
        return True

    low = next((e for e in (1, 2, 4) if accepts(e, first + 1, h0, i0)), 1)
    most = next((n for n in range(max(MAX_LAYERS, first + 1), first, -1) if accepts(low, n, h0, i0)), first + 1)
    free_hidden = all(accepts(low, first + 1, h, i0) for h in (HIDDEN_STEP, 3 * HIDDEN_STEP))
    free_width = all(accepts(low, first + 1, h0, i) for i in (3, 7))
    return FamilyLimits(first, low, most, None if free_hidden else h0, None if free_width else i0)


def _distinct(schema: KeySchema, other: KeySchema) -> bool:
    return set(schema.keys(1, 1)) != set(other.keys(1, 1))


@st.composite
def checkpoint_plans(
    draw: st.DrawFn,
    family: str,
    schemas: tuple[KeySchema, ...],
    formats: tuple[str, ...] = tuple(FORMATS),
    dtypes: tuple[torch.dtype, ...] = PLAIN_DTYPES,
    duplicates: bool = True,
    damage: tuple[str, ...] = DAMAGE,
    experts: st.SearchStrategy[int] | None = None,
    max_layers: int = MAX_LAYERS,
    shared: tuple[str, ...] = SHARED,
    neighbours: tuple[str, ...] = NEIGHBOURS,
) -> CheckpointPlan:
    """A checkpoint of `family` in one of `schemas`: `experts` routed experts (default `keys.expert_counts()`:
    1–8, or a released model's 8–384), 1–`max_layers` layers within the layer × expert budget (some dense where
    the family's config can say so), dims with hidden == intermediate and hidden == 2·intermediate drawn as
    often as free ones, a plain dtype, a format of `formats` (quantization tensors instead of or beside plain
    weights; 8-bit ones only while their fingerprints stay distinct), 1–4 shards split contiguously or
    round-robin, maybe a second schema holding some layers' experts again, maybe one key dropped (outside the
    duplicated layers) or one extra; beside the experts the router, a shared expert spelled one of `shared`
    ("" none) and any of the `neighbours` kinds (router bias, norms, attention, a dense layer's MLP). Shrinks
    toward the first schema, one expert, one layer, no quantization, the smallest dims, float32, one unindexed
    shard, no duplicate, no damage, nothing beside the experts but the router."""
    limits = family_limits(family)
    schema = draw(st.sampled_from(schemas))
    num_experts = max(draw(experts if experts is not None else expert_counts()), limits.min_experts)
    num_layers = draw(layer_counts(num_experts, max(min(max_layers, limits.max_layers), limits.first_moe_layer + 1),
                                   limits.first_moe_layer + 1))
    if 3 * num_experts * num_layers > _EIGHT_BIT_SLOTS:
        formats = tuple(q for q in formats if not _eight_bit(q)) or formats
    fixed = [d for d in (limits.hidden, limits.intermediate) if d is not None]
    formats = tuple(q for q in formats if all(d % DIM_UNIT.get(q, 1) == 0 for d in fixed)) or formats
    quant = draw(st.sampled_from(formats))
    mode = draw(st.sampled_from(("instead", "beside"))) if quant != "none" else "instead"
    unit = DIM_UNIT.get(quant, 1)
    relation = draw(st.sampled_from(("free", "square", "double")))
    step = max(unit, HIDDEN_STEP)
    if unit == 1 and relation == "square":  # hidden == intermediate: the width follows the hidden size's step
        intermediate = limits.intermediate or step * draw(st.integers(1, 3))
    else:
        intermediate = limits.intermediate or unit * draw(st.integers(2 if unit == 1 else 1, 12 if unit == 1 else 2))
    if relation == "double" and (2 * intermediate) % step:
        relation = "free"  # an odd head width would follow: the free hidden size instead
    hidden = limits.hidden or {"square": intermediate, "double": 2 * intermediate}.get(relation) or step * draw(
        st.integers(1, 3 if unit == 1 else 4))
    dense: tuple[int, ...] = ()
    if num_layers > 1 and _has_dense_layers_knob(family):
        dense = tuple(sorted(draw(st.sets(st.integers(0, num_layers - 1), max_size=num_layers - 1))))
    moe_layers = [layer for layer in range(num_layers) if layer not in dense]
    others = tuple(s for s in schemas if _distinct(s, schema))
    duplicate = draw(st.none() | st.sampled_from(others)) if duplicates and others else None
    duplicate_layers = tuple(sorted(draw(st.sets(st.sampled_from(moe_layers), min_size=1)))) if duplicate else ()
    return CheckpointPlan(
        family=family,
        schema=schema,
        num_layers=num_layers,
        num_experts=num_experts,
        hidden=hidden,
        intermediate=intermediate,
        dtype=draw(st.sampled_from(dtypes)),
        dense_layers=dense,
        quant=quant,
        mode=mode,
        shards=draw(st.integers(1, 4)),
        split=draw(st.sampled_from(("contiguous", "round_robin"))),
        indexed=draw(st.booleans()),
        duplicate=duplicate,
        duplicate_layers=duplicate_layers,
        damage=draw(st.sampled_from(damage if len(duplicate_layers) < len(moe_layers)
                                    else tuple(d for d in damage if d != "drop") or ("none",))),
        damage_at=draw(st.integers(0, 255)),
        shared=draw(st.sampled_from(shared)),
        neighbours=("router", *(kind for kind in neighbours if draw(st.booleans()))),
    )


def checkpoints(family: str, schemas: tuple[KeySchema, ...], **plan_options: object
                ) -> st.SearchStrategy[GeneratedCheckpoint]:
    """Drawn plans (see `checkpoint_plans`), each written to its own temporary directory."""
    return checkpoint_plans(family, schemas, **plan_options).map(write_checkpoint)  # type: ignore[arg-type]


# ---- bad files -------------------------------------------------------------------------------------

BAD_KINDS = ("truncated", "dtype_lie", "dtype_lie_same_size", "shape_lie", "shape_lie_same_size", "offsets_lie",
             "key_in_two_shards", "missing_shard", "empty_file", "not_safetensors")
_SAME_SIZE_INT = {"F64": "I64", "F32": "I32", "F16": "I16", "BF16": "I16"}


@dataclass
class BadCheckpoint:
    """A written checkpoint with one file broken on purpose: which kind, which file, which tensor."""

    checkpoint: GeneratedCheckpoint
    kind: str
    file: str
    key: str | None


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _rewrite(path: Path, header: dict, body: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


# The kinds that only rewrite the header entry of the broken key, and how.
_HEADER_LIES: dict[str, Callable[[dict], None]] = {
    # claims 8-byte elements: the byte range no longer fits the shape
    "dtype_lie": lambda entry: entry.update(dtype="F64"),
    # the bytes still fit: only the other pieces can tell
    "dtype_lie_same_size": lambda entry: entry.update(dtype=_SAME_SIZE_INT[entry["dtype"]]),
    "shape_lie": lambda entry: entry.update(shape=[*entry["shape"], 2]),
    "shape_lie_same_size": lambda entry: entry.update(shape=[math.prod(entry["shape"])]),
    "offsets_lie": lambda entry: entry.update(data_offsets=[offset + 1 for offset in entry["data_offsets"]]),
}


def _copy_to_other_shard(ckpt: GeneratedCheckpoint, key: str, shard: Path) -> Path:
    """Write `key` (held by `shard`) into another shard too; that other shard."""
    other = next(n for n in sorted(set(ckpt.shard_of.values())) if n != ckpt.shard_of[key])
    with safe_open(ckpt.directory / other, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    with safe_open(shard, framework="pt") as f:
        tensors[key] = f.get_tensor(key)
    save_file(tensors, ckpt.directory / other)
    return ckpt.directory / other


def break_checkpoint(ckpt: GeneratedCheckpoint, kind: str) -> BadCheckpoint:
    """Break the shard holding the first expert key in the way `kind` names (see BAD_KINDS)."""
    key = next(k for k in ckpt.shard_of if ".experts." in k)
    shard = ckpt.directory / ckpt.shard_of[key]
    header, body = _header(shard)
    named: str | None = key
    if kind in _HEADER_LIES:
        _HEADER_LIES[kind](header[key])
        _rewrite(shard, header, body)
    elif kind == "truncated":
        last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
        shard.write_bytes(shard.read_bytes()[:-3])
        named = last
    elif kind == "key_in_two_shards":
        shard = _copy_to_other_shard(ckpt, key, shard)
    elif kind == "missing_shard":
        shard.unlink()
        named = next(k for k, name in ckpt.shard_of.items() if name == shard.name)  # the index's first
    elif kind == "empty_file":
        shard.write_bytes(b"")
        named = None
    elif kind == "not_safetensors":
        torch.save({key: torch.zeros(1)}, shard)  # what a mislabelled pytorch_model.bin looks like
        named = None
    else:
        raise ValueError(f"unknown bad-file kind {kind!r}; kinds: {', '.join(BAD_KINDS)}")
    return BadCheckpoint(ckpt, kind, shard.name, named)


def bad_checkpoints(kind: str, family: str, schemas: tuple[KeySchema, ...]) -> st.SearchStrategy[BadCheckpoint]:
    """Clean plain checkpoints in two or more shards (every plan has at least three keys), broken as
    `kind` says."""
    plans = checkpoint_plans(family, schemas, formats=("none",), duplicates=False, damage=("none",))
    return plans.map(lambda plan: write_checkpoint(replace(plan, shards=max(plan.shards, 2)))).map(
        lambda ckpt: break_checkpoint(ckpt, kind))
