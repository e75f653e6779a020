"""Writing a checkpoint plan to disk: config.json, safetensors shards, the index; every tensor fingerprinted.

Each expert slot (layer, parameter, suffix, expert, gate/up half) gets its own fingerprint: element i
of slot number k holds the bit pattern `(k + i·stride) mod M`, so a misplaced slot, swapped halves, a
wrong expert or a transpose changes the bits, and `GeneratedCheckpoint.locate` says which slot and
element a wrong value was written for. The non-expert tensors a plan asks for beside the experts (the router, its
selection bias, the shared expert, norms, attention, a dense layer's MLP) are fingerprinted the same way, so an
expert slot holding one of them says which. `write_full_checkpoint` adds the rest of a real transformers
model's weights, for loaders that build the whole model.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hypothesis import reject
from safetensors.torch import save_file

from harness.families import tiny_spec
from harness.tiny_configs import tiny_config
from reference.checkpoint import PROJ_NAMES, KeySchema, parse_expert_key
from reference.config import MoESpec, find_moe_config, resolve_moe_spec
from reference.loader import param_name
from reference.shards import INDEX_NAME, SINGLE_NAME


@dataclass(frozen=True)
class TensorFormat:
    """One tensor kind a format stores per expert projection.

    `shape(out, in)` is its per-expert shape; `out_axis` is the axis of output rows, where a fused
    gate_up parameter puts gate and up side by side (0-d tensors of gate and up stack into [2]).
    Stated here independently of the loader's own table, so the check compares the two.
    """

    suffix: str
    dtype: torch.dtype | None  # None: the drawn plain dtype
    shape: Callable[[int, int], tuple[int, ...]]
    out_axis: int = 0


PLAIN = TensorFormat("weight", None, lambda o, i: (o, i))
_FP8_WEIGHT = TensorFormat("weight", torch.float8_e4m3fn, lambda o, i: (o, i))
_FP8_BLOCK = 128  # DeepSeek-style 128×128 weight blocks
AWQ_GROUP = 16  # AWQ's usual 128 is larger than the tiny dims drawn here
FORMATS: dict[str, tuple[TensorFormat, ...]] = {
    "none": (PLAIN,),
    "fp8": (_FP8_WEIGHT, TensorFormat("weight_scale", torch.float32, lambda o, i: ())),
    "fp8_block": (_FP8_WEIGHT, TensorFormat("weight_scale_inv", torch.float32,
                                            lambda o, i: (-(-o // _FP8_BLOCK), -(-i // _FP8_BLOCK)))),
    # NVFP4 (ModelOpt): two fp4 values per byte, an fp8 scale per 16 inputs, two per-tensor fp32 scales.
    "nvfp4": (TensorFormat("weight", torch.uint8, lambda o, i: (o, i // 2)),
              TensorFormat("weight_scale", torch.float8_e4m3fn, lambda o, i: (o, i // 16)),
              TensorFormat("weight_scale_2", torch.float32, lambda o, i: ()),
              TensorFormat("input_scale", torch.float32, lambda o, i: ())),
    # AWQ: int4 packed eight per int32, stored input-major, so output rows are the last axis.
    "awq": (TensorFormat("qweight", torch.int32, lambda o, i: (i, o // 8), 1),
            TensorFormat("qzeros", torch.int32, lambda o, i: (i // AWQ_GROUP, o // 8), 1),
            TensorFormat("scales", torch.float16, lambda o, i: (i // AWQ_GROUP, o), 1)),
}
# Packing and grouping need dims in multiples of this.
DIM_UNIT = {"nvfp4": 16, "awq": 16}
_QUANT_METHOD = {"fp8": "fp8", "fp8_block": "fp8", "nvfp4": "modelopt", "awq": "awq"}

# Bit patterns: the integer type of each dtype's width and the code range used. Float codes stay
# below the exponent-all-ones patterns, so no fingerprint is NaN or inf (a cast would not keep them).
_CODES: dict[torch.dtype, tuple[torch.dtype, int]] = {
    torch.float32: (torch.int32, 1 << 30),
    torch.float16: (torch.int16, 1 << 14),
    torch.bfloat16: (torch.int16, 1 << 14),
    torch.float8_e4m3fn: (torch.uint8, 1 << 8),
    torch.uint8: (torch.uint8, 1 << 8),
    torch.int32: (torch.int32, 1 << 31),
}
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bit patterns as integers of the same width (exact and NaN-safe to compare)."""
    return tensor.contiguous().view(_BITS[tensor.dtype.itemsize])


def fingerprint(shape: tuple[int, ...], dtype: torch.dtype, number: int, stride: int) -> torch.Tensor:
    """Element i holds bit pattern (number + i·stride) mod M: distinct between slot numbers at every i,
    and within a slot for i ≢ i' (mod M), since the stride is odd and M a power of two."""
    width, modulus = _CODES[dtype]
    codes = (number + torch.arange(math.prod(shape), dtype=torch.int64) * stride) % modulus
    return codes.to(width).view(dtype).reshape(shape)


def formats_of(quant: str, mode: str) -> tuple[TensorFormat, ...]:
    """The tensor kinds per projection: the format's own (`instead`), or plain weights plus its extras."""
    if quant == "none" or mode == "instead":
        return FORMATS[quant]
    return (PLAIN, *(f for f in FORMATS[quant] if f.suffix != "weight"))


@dataclass(frozen=True)
class CheckpointPlan:
    """Everything a drawn checkpoint is, as data; `write_checkpoint(plan)` rebuilds it."""

    family: str
    schema: KeySchema
    num_layers: int
    num_experts: int
    hidden: int
    intermediate: int
    dtype: torch.dtype = torch.float32
    dense_layers: tuple[int, ...] = ()
    quant: str = "none"
    mode: str = "instead"  # instead | beside (plain weights kept next to the quantization tensors)
    shards: int = 1
    split: str = "contiguous"  # contiguous | round_robin
    indexed: bool = False
    duplicate: KeySchema | None = None  # a second schema holding the same tensors for duplicate_layers
    duplicate_layers: tuple[int, ...] = ()
    damage: str = "none"  # none | drop (one key left out) | extra (one key that no slot takes)
    damage_at: int = 0
    shared: str = ""  # the shared expert's spelling (reference.checkpoint.SHARED_SPELLINGS), "" for none
    neighbours: tuple[str, ...] = ("router",)  # the non-expert kinds written (reference.checkpoint.NEIGHBOUR_KINDS)

    def describe(self) -> dict[str, Any]:
        """The plan as a failure report shows it."""
        out: dict[str, Any] = {
            "family": self.family, "schema": self.schema.id, "layers": self.num_layers,
            "dense_layers": list(self.dense_layers), "experts": self.num_experts,
            "hidden": self.hidden, "intermediate": self.intermediate, "dtype": str(self.dtype),
            "format": self.quant if self.quant == "none" else f"{self.quant} ({self.mode} plain weights)",
            "shards": f"{self.shards} {self.split}" + (" with index" if self.indexed or self.shards > 1 else ""),
        }
        if self.duplicate:
            out["also_written_as"] = f"{self.duplicate.id} for layers {list(self.duplicate_layers)}"
        if self.damage != "none":
            out["damage"] = self.damage
        if self.shared:
            out["shared_expert"] = self.shared
        if self.neighbours != ("router",):
            out["beside_the_experts"] = list(self.neighbours)
        return out


@dataclass(frozen=True)
class Slot:
    """One fingerprinted unit: an expert's gate or up half, its down projection, or a non-expert tensor (the
    router, a norm, ...: `param` is its role in `KeySchema.neighbour_keys`, `expert` None; layer -1 is outside
    the layers)."""

    layer: int
    param: str  # gate_up_proj | down_proj | a neighbour role (router, router_bias, shared_up_proj, q_proj, ...)
    suffix: str
    expert: int | None = None
    half: int | None = None  # 0 gate / 1 up

    def __str__(self) -> str:
        where = "" if self.expert is None else f" expert {self.expert}"
        half = "" if self.half is None else (" gate half", " up half")[self.half]
        return f"layer {self.layer} {self.param}.{self.suffix}{where}{half}"


@dataclass
class GeneratedCheckpoint:
    """A checkpoint written to `directory` and what a correct loader must make of it.

    `expected` maps reference parameter names to their exact tensors; `duplicated` names parameters
    written in two schemas; `dropped` and `extra` are keys left out or added on purpose; `others` maps each
    non-expert key written (router, shared expert, norms, ...) to its tensor. A directory the
    writer created (`owned`) is deleted when this object is, or at `cleanup()`, so Hypothesis examples
    do not pile up on disk; a directory the caller gave stays the caller's.
    """

    plan: CheckpointPlan
    directory: Path
    spec: MoESpec
    expected: dict[str, torch.Tensor]
    shard_of: dict[str, str]
    duplicated: tuple[str, ...]
    dropped: tuple[str, ...]
    extra: tuple[str, ...]
    fingerprints: dict[Slot, tuple[int, torch.Tensor]] = field(repr=False)
    keys_of: dict[Slot, str] = field(repr=False)
    stride: int = 1
    owned: bool = True
    others: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.owned:
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.directory, True)

    def __repr__(self) -> str:  # the plan rebuilds it; its tensors and key lists run to megabytes at E = 384
        return f"write_checkpoint({self.plan!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's printer, for falsifying examples
        printer.text(repr(self))

    def cleanup(self) -> None:
        """Delete the directory now (only one the writer created)."""
        if self.owned:
            self._finalizer()

    def locate(self, dtype: torch.dtype, bits: int) -> str:
        """Which slot and element a bit pattern was written for, and the checkpoint key that held it."""
        width, modulus = _CODES[dtype]
        code = bits % (1 << (8 * width.itemsize))
        inverse = pow(self.stride, -1, modulus)
        hits = []
        for slot, (number, tensor) in self.fingerprints.items():
            index = (code - number) * inverse % modulus
            if tensor.dtype == dtype and index < tensor.numel():
                position = [int(i) for i in torch.unravel_index(torch.tensor(index), tensor.shape)]
                hits.append(f"{slot} element {position} (key {self.keys_of.get(slot, '<not written>')})")
        return " or ".join(hits[:2]) if hits else f"no slot of this checkpoint (bits {code:#x})"


def write_checkpoint(
    plan: CheckpointPlan, directory: Path | None = None, extra_tensors: dict[str, torch.Tensor] | None = None
) -> GeneratedCheckpoint:
    """Write `plan` into `directory` (a fresh temporary one, deleted with the result, by default);
    return what it must load as.

    `extra_tensors` (non-expert weights, e.g. a whole model's attention) are written as given.
    """
    if directory is not None:
        return _write(plan, Path(directory), extra_tensors, owned=False)
    directory = Path(tempfile.mkdtemp(prefix="moe-harness-ckpt-"))
    try:
        return _write(plan, directory, extra_tensors, owned=True)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)  # nothing will own it to delete it later
        raise


def _write(plan: CheckpointPlan, directory: Path, extra_tensors: dict[str, torch.Tensor] | None, owned: bool
           ) -> GeneratedCheckpoint:
    config = plan_config(plan)
    spec = resolve_moe_spec(config)
    formats = formats_of(plan.quant, plan.mode)
    shapes = _slot_shapes(plan, spec, config, formats)
    stride = 2 * len(shapes) + 3  # odd and larger than any slot number
    numbers: dict[torch.dtype, int] = {}
    prints: dict[Slot, tuple[int, torch.Tensor]] = {}
    for slot, (shape, dtype) in shapes.items():
        dtype = dtype or plan.dtype
        numbers[dtype] = numbers.get(dtype, -1) + 1
        prints[slot] = (numbers[dtype], fingerprint(shape, dtype, numbers[dtype], stride))
    axis = {f.suffix: f.out_axis for f in formats}
    expected = {param_name(s.layer, s.param, s.suffix): _assemble(prints, s, axis[s.suffix], spec.num_experts)
                for s in prints if s.expert == 0 and s.half in (0, None)}
    tensors: dict[str, torch.Tensor] = dict(extra_tensors or {})
    keys_of: dict[Slot, str] = {}
    _spell(plan, plan.schema, spec.moe_layers, prints, expected, tensors, keys_of)
    if plan.duplicate is not None:  # copies: safetensors refuses to save one storage under two keys
        second: dict[str, torch.Tensor] = {}
        _spell(plan, plan.duplicate, plan.duplicate_layers, prints, expected, second, {}, experts_only=True)
        tensors.update({key: value.clone() for key, value in second.items()})
    duplicated = tuple(sorted({param_name(s.layer, s.param, s.suffix) for s in prints
                               if s.layer in plan.duplicate_layers and s.expert is not None}))
    dropped, extra = _damage(plan, spec, prints, tensors, keys_of, stride, numbers)
    others = {key: tensors[key] for slot, key in keys_of.items() if slot.expert is None and key in tensors}
    shard_of = _write_files(plan, directory, tensors, config)
    return GeneratedCheckpoint(plan, directory, spec, expected, shard_of, duplicated, dropped, extra,
                               prints, keys_of, stride, owned, others)


def plan_config(plan: CheckpointPlan) -> Any:
    """The family's tiny transformers config with the plan's sizes and layers (what config.json holds)."""
    base = tiny_spec(plan.family)
    names = base.spellings
    overrides: dict[str, Any] = {
        names["num_experts"]: plan.num_experts, names["top_k"]: min(base.top_k, plan.num_experts),
        names["hidden_size"]: plan.hidden, names["intermediate_size"]: plan.intermediate,
        "num_hidden_layers": plan.num_layers,
    }
    if plan.dense_layers:
        overrides["mlp_only_layers"] = list(plan.dense_layers)
    if base.routing.n_group is not None:  # one group, so any expert count divides evenly
        overrides.update(n_group=1, topk_group=1)
    return tiny_config(plan.family, **overrides)


def _neighbour_shapes(plan: CheckpointPlan, spec: MoESpec, config: Any) -> dict[str, tuple[int, ...]]:
    """The shape of each non-expert role, from the plan's dims and the config's head counts and widths."""
    h, i, e = spec.hidden_size, spec.intermediate_size, spec.num_experts
    sub, _ = find_moe_config(config)
    heads = getattr(sub, "num_attention_heads", None) or 1
    kv_heads = getattr(sub, "num_key_value_heads", None) or heads
    head_dim = getattr(sub, "head_dim", None) or max(1, h // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    shared = spec.shared_intermediate_size or i
    dense = i if spec.spellings.get("intermediate_size") == "intermediate_size" else (
        getattr(sub, "intermediate_size", None) or i)
    return {
        "router": (e, h), "router_bias": (e,), "shared_gate": (1, h),
        "shared_gate_proj": (shared, h), "shared_up_proj": (shared, h), "shared_down_proj": (h, shared),
        "input_layernorm": (h,), "post_attention_layernorm": (h,), "final_norm": (h,),
        "q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
        "dense_gate_proj": (dense, h), "dense_up_proj": (dense, h), "dense_down_proj": (h, dense),
    }


def _slot_shapes(plan: CheckpointPlan, spec: MoESpec, config: Any, formats: tuple[TensorFormat, ...]
                 ) -> dict[Slot, tuple[tuple[int, ...], torch.dtype | None]]:
    """Every slot with its shape and dtype (None: plain): gate and up are [I, H] as (out, in), down [H, I]; then
    the non-expert tensors of every layer (and the final norm, layer -1) the plan asks for."""
    h, i = spec.hidden_size, spec.intermediate_size
    out: dict[Slot, tuple[tuple[int, ...], torch.dtype | None]] = {}
    for layer in spec.moe_layers:
        for fmt in formats:
            for expert in range(spec.num_experts):
                for half in (0, 1):
                    out[Slot(layer, "gate_up_proj", fmt.suffix, expert, half)] = (fmt.shape(i, h), fmt.dtype)
                out[Slot(layer, "down_proj", fmt.suffix, expert)] = (fmt.shape(h, i), fmt.dtype)
    shapes = _neighbour_shapes(plan, spec, config)
    for layer in (*range(plan.num_layers), -1):
        for role in neighbours_of(plan, spec, layer):
            out[Slot(layer, role, "weight")] = (shapes[role], None)
    return out


def neighbours_of(plan: CheckpointPlan, spec: MoESpec, layer: int) -> dict[str, str]:
    """The non-expert keys (role -> key) the plan writes for `layer` in its schema."""
    return plan.schema.neighbour_keys(layer, layer in spec.moe_layers, plan.shared, plan.neighbours)


def _assemble(prints: dict[Slot, tuple[int, torch.Tensor]], first: Slot, axis: int, experts: int) -> torch.Tensor:
    """The fused parameter: experts stacked, each expert's gate then up along the output-row axis."""
    rows = []
    for expert in range(experts):
        if first.half is None:
            rows.append(prints[Slot(first.layer, first.param, first.suffix, expert)][1])
            continue
        gate, up = (prints[Slot(first.layer, first.param, first.suffix, expert, h)][1] for h in (0, 1))
        rows.append(torch.stack([gate, up]) if gate.dim() == 0 else torch.cat([gate, up], dim=axis))
    return torch.stack(rows)


def _spell(plan: CheckpointPlan, schema: KeySchema, layers: tuple[int, ...],
           prints: dict[Slot, tuple[int, torch.Tensor]], expected: dict[str, torch.Tensor],
           tensors: dict[str, torch.Tensor], keys_of: dict[Slot, str], experts_only: bool = False) -> None:
    """Write the expert slots of `layers` under `schema`'s key names (fused keys hold the assembled parameter),
    and unless `experts_only` every non-expert slot under its key in `schema`."""
    names = dict(zip((0, 1, None), PROJ_NAMES[schema.names], strict=True))
    moe_layers = set(layers)
    for slot, (_, tensor) in prints.items():
        if slot.expert is None:
            if not experts_only:
                keys_of[slot] = schema.neighbour_keys(slot.layer, slot.layer in moe_layers, plan.shared,
                                                      plan.neighbours)[slot.param]
                tensors[keys_of[slot]] = tensor
            continue
        if slot.layer not in layers:
            continue
        root = schema.layer_root(slot.layer)
        if schema.layout == "fused":
            key = f"{root}experts.{slot.param}" + ("" if slot.suffix == "weight" else f".{slot.suffix}")
            value = expected[param_name(slot.layer, slot.param, slot.suffix)]
            if schema.transposed:
                value = value.transpose(-1, -2)
        else:
            key, value = f"{root}experts.{slot.expert}.{names[slot.half]}.{slot.suffix}", tensor
        tensors[key] = value
        keys_of[slot] = key


def _damage(plan: CheckpointPlan, spec: MoESpec, prints: dict[Slot, tuple[int, torch.Tensor]],
            tensors: dict[str, torch.Tensor], keys_of: dict[Slot, str], stride: int, numbers: dict[torch.dtype, int]
            ) -> tuple[tuple[str, ...], ...]:
    """Leave one expert key out (`drop`) or add one for an expert beyond the count (`extra`: the config's count,
    which is the plan's wherever the family's config takes it)."""
    if plan.damage == "drop":
        candidates = sorted({key for slot, key in keys_of.items()
                             if slot.expert is not None and slot.layer not in plan.duplicate_layers})
        # Every expert layer the family's config keeps is written twice (the plan cannot know a config that
        # makes more layers dense than it chose): no key can go missing, so the plan cannot be realised.
        if not candidates:
            reject()
        key = candidates[plan.damage_at % len(candidates)]
        del tensors[key]
        return (key,), ()
    if plan.damage == "extra":
        first = next(s for s in prints if s.param == "gate_up_proj")
        tensor = prints[first][1]
        numbers[tensor.dtype] += 1
        gate = PROJ_NAMES["proj" if plan.schema.layout == "fused" else plan.schema.names][0]
        key = f"{plan.schema.layer_root(first.layer)}experts.{spec.num_experts}.{gate}.{first.suffix}"
        tensors[key] = fingerprint(tuple(tensor.shape), tensor.dtype, numbers[tensor.dtype], stride)
        return (), (key,)
    return (), ()


def _write_files(plan: CheckpointPlan, directory: Path, tensors: dict[str, torch.Tensor], config: Any
                 ) -> dict[str, str]:
    """config.json, the shards and (when sharded or asked) the index; returns key -> shard file name."""
    data = json.loads(config.to_json_string(use_diff=False))
    data["dtype"] = str(plan.dtype).removeprefix("torch.")
    if plan.quant != "none":
        data["quantization_config"] = {"quant_method": _QUANT_METHOD[plan.quant], "format": plan.quant,
                                       "plain_weights_kept": plan.mode == "beside"}
    (directory / "config.json").write_text(json.dumps(data, indent=1))
    keys = list(tensors)
    count = min(plan.shards, len(keys))
    indexed = plan.indexed or count > 1
    file_of = {}
    for position, key in enumerate(keys):
        shard = position * count // len(keys) if plan.split == "contiguous" else position % count
        file_of[key] = f"model-{shard + 1:05d}-of-{count:05d}.safetensors" if indexed else SINGLE_NAME
    for name in sorted(set(file_of.values())):
        part = {k: tensors[k].contiguous() for k in keys if file_of[k] == name}
        save_file(part, directory / name, metadata={"format": "pt"})
    if indexed:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": file_of}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return file_of


_ROUTER = re.compile(r"layers\.\d+\.mlp\.gate\.weight$")
_OTHER_STRIDE = 104_729  # odd: the other weights' fingerprints need only be exact, not decodable


def write_full_checkpoint(plan: CheckpointPlan) -> GeneratedCheckpoint:
    """`plan`'s checkpoint plus every other weight of the family's real transformers model (attention,
    norms, embeddings), each fingerprinted too, so that a from_pretrained load initialises nothing."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(plan_config(plan))
    others = {}
    for number, (name, tensor) in enumerate(model.state_dict().items()):
        if parse_expert_key(name) or _ROUTER.search(name):
            continue  # the plan writes these in its own schema
        key = re.sub(r"^model\.", plan.schema.prefix, name)
        others[key] = fingerprint(tuple(tensor.shape), plan.dtype, number, _OTHER_STRIDE)
    return write_checkpoint(plan, extra_tensors=others)
