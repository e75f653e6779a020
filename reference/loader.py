"""The reference checkpoint loader: any key schema of NOTES §5 into the reference's fused parameters.

Planning reads only headers: each expert key is remapped, placed through the expert params mapping
into a (parameter, expert, shard) slot, and the report (missing, unexpected, conflicting keys) is known
before any tensor data is read. Streaming then assembles one parameter at a time:
`gate_up_proj [E, 2I, H]` (gate rows first) and `down_proj [E, H, I]` per MoE layer, with quantization
tensors (`weight_scale`, `qweight`, ...) assembled the same way under `gate_up_proj.<suffix>`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from reference.checkpoint import (
    FUSED_NAMES,
    PROJ_NAMES,
    REFERENCE_SCHEMA,
    ExpertParamEntry,
    KeySchema,
    make_expert_params_mapping,
    parse_expert_key,
    remap,
)
from reference.config import MoESpec
from reference.shards import CheckpointError, TensorInfo, open_shards, read_index

# The axis of a per-expert tensor that holds output rows, where gate and up are concatenated. AWQ stores
# its packed tensors input-major ([in, out/8]), so its gate/up halves sit side by side on the last axis.
GATE_UP_AXIS = {"qweight": -1, "qzeros": -1, "scales": -1}
_PARAM_OF = {"experts.w13_": "gate_up_proj", "experts.w2_": "down_proj"}
_HALF_OF = {"w1": 0, "w3": 1}
_EXPERT_LIKE = re.compile(r"(^|\.)experts\.")


def param_name(layer: int, fused: str, suffix: str = "weight") -> str:
    """The reference name of a fused expert parameter: `model.layers.L.moe.experts.gate_up_proj[.suffix]`."""
    return f"{REFERENCE_SCHEMA.layer_root(layer)}experts.{fused}" + ("" if suffix == "weight" else f".{suffix}")


def expert_key_name(layer: int, expert: int, proj: str, suffix: str) -> str:
    """The reference per-expert name of one slot (`...experts.3.up_proj.weight`), as the report names it."""
    return f"{REFERENCE_SCHEMA.layer_root(layer)}experts.{expert}.{proj}.{suffix}"


@dataclass
class LoadReport:
    """What a load did with each key: loaded, missing slots, unexpected keys, keys claiming one slot.

    `renamed` maps each unexpected key to the name the remap gave it, where that differs.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """Reference-named parameters (fused experts, plus non-expert tensors under their own names)."""

    params: dict[str, torch.Tensor]
    report: LoadReport


@dataclass(frozen=True)
class _Piece:
    info: TensorInfo
    expert: int | None  # None: the key holds the whole fused parameter
    half: int | None  # 0 gate / 1 up for gate_up_proj pieces; None for down_proj and whole parameters


@dataclass
class _ParamPlan:
    name: str
    fused: str
    suffix: str
    pieces: list[_Piece]

    def shape(self, num_experts: int) -> tuple[int, ...]:
        first = self.pieces[0]
        if first.expert is None:
            return first.info.shape
        if first.half is None:
            return (num_experts, *first.info.shape)
        rows = list(first.info.shape) or [1]  # 0-d scales of gate and up stack into [2]
        rows[_axis(self.suffix, len(rows))] *= 2
        return (num_experts, *rows)


def _axis(suffix: str, ndim: int) -> int:
    return GATE_UP_AXIS.get(suffix, 0) % max(ndim, 1)


@dataclass(frozen=True)
class LoadPlan:
    """A validated plan: the report, and what to read for each parameter. Reads no tensor data itself."""

    report: LoadReport
    params: list[_ParamPlan]
    passthrough: list[TensorInfo]
    num_experts: int

    def stream(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) one parameter at a time; holds one assembled parameter plus one piece."""
        shards = {p.info.shard for plan in self.params for p in plan.pieces} | {i.shard for i in self.passthrough}
        with open_shards(shards) as reader:
            for info in self.passthrough:
                yield info.key, reader.read(info)
            for plan in self.params:
                first = plan.pieces[0]
                if first.expert is None:
                    yield plan.name, reader.read(first.info)
                    continue
                out = torch.empty(plan.shape(self.num_experts), dtype=first.info.dtype)
                for piece in plan.pieces:
                    _place(out, piece, reader.read(piece.info), plan.suffix)
                yield plan.name, out


def _place(out: torch.Tensor, piece: _Piece, tensor: torch.Tensor, suffix: str) -> None:
    target = out[piece.expert]
    if piece.half is not None:
        tensor = tensor.reshape(tensor.shape or (1,))
        axis = _axis(suffix, tensor.dim())
        size = tensor.shape[axis]
        target = target.narrow(axis, piece.half * size, size)
    target.copy_(tensor)


def plan_checkpoint(
    directory: Path,
    spec: MoESpec,
    remap_fn: Callable[[str], str] = remap,
    produces: KeySchema = REFERENCE_SCHEMA,
    mapping_fn: Callable[..., list[ExpertParamEntry]] = make_expert_params_mapping,
) -> LoadPlan:
    """Validate the files and place every key; raise CheckpointError for bad files or inconsistent pieces.

    `remap_fn` must turn each expert key into `produces`' spelling; a key it turns into anything else
    is unexpected. `mapping_fn` (the expert params mapping) places each per-expert key in its
    (parameter, expert, shard) slot. A slot claimed by two keys (two schemas, or fused and per-expert
    layouts of one parameter) is a conflict: the parameter is reported and left out, never assembled
    from a mix.
    """
    tensors = read_index(directory)
    report = LoadReport()
    claims: dict[tuple[int, str, str], dict[tuple[int | None, int | None], list[TensorInfo]]] = defaultdict(
        lambda: defaultdict(list))
    rows = _mapping_rows(mapping_fn, produces, spec.num_experts)
    passthrough = []
    for key, info in tensors.items():
        name = remap_fn(key)
        parts = parse_expert_key(name)
        if parts is None and not _EXPERT_LIKE.search(name):
            passthrough.append(info)
            continue
        slot = None if parts is None else _slot(parts, produces, rows, spec)
        if slot is None:
            report.unexpected.append(key)
            if name != key:
                report.renamed[key] = name
            continue
        layer, fused, suffix, expert, half = slot
        claims[(layer, fused, suffix)][(expert, half)].append(info)
    params = _plan_params(claims, report, spec)
    report.loaded = sorted([i.key for i in passthrough] + [p.info.key for plan in params for p in plan.pieces])
    report.unexpected.sort()
    return LoadPlan(report, params, passthrough, spec.num_experts)


def _mapping_rows(mapping_fn: Callable[..., list[ExpertParamEntry]], produces: KeySchema, num_experts: int
                  ) -> dict[str, list[ExpertParamEntry]]:
    gate, up, down = PROJ_NAMES[produces.names]
    rows: dict[str, list[ExpertParamEntry]] = defaultdict(list)
    for entry in mapping_fn(gate, down, up, num_experts):
        rows[entry.ckpt_key].append(entry)
    return rows


def _slot(parts: dict[str, str], produces: KeySchema, rows: dict[str, list[ExpertParamEntry]], spec: MoESpec
          ) -> tuple[int, str, str, int | None, int | None] | None:
    """(layer, fused param, suffix, expert, half) for a remapped name in `produces`' form, or None."""
    layer = int(parts["layer"])
    if (parts.get("prefix", ""), parts.get("block", "")) != (produces.prefix, produces.block):
        return None
    if layer not in spec.moe_layers:
        return None
    if "fused" in parts:
        return layer, parts["fused"], parts.get("fsuffix", "weight"), None, None
    entries = rows.get(f"experts.{parts['expert']}.{parts['proj']}.")
    if not entries:  # an expert beyond num_experts, or a projection name `produces` does not use
        return None
    (entry,) = entries  # no redundant experts: one physical slot per checkpoint key
    return layer, _PARAM_OF[entry.param], parts["suffix"], entry.expert_id, _HALF_OF.get(entry.shard_id)


def _plan_params(claims: dict, report: LoadReport, spec: MoESpec) -> list[_ParamPlan]:
    suffixes = sorted({suffix for (_, _, suffix) in claims}) or ["weight"]
    plans = []
    for layer in spec.moe_layers:
        for fused in FUSED_NAMES:
            for suffix in suffixes:
                name = param_name(layer, fused, suffix)
                slots = claims.get((layer, fused, suffix), {})
                if not slots:
                    report.missing.append(name)
                    continue
                keys = sorted(i.key for infos in slots.values() for i in infos)
                whole = slots.get((None, None), [])
                if (whole and len(slots) > 1) or any(len(infos) > 1 for infos in slots.values()):
                    report.conflicts[name] = keys
                    continue
                plan: _ParamPlan | None
                if whole:
                    plan = _ParamPlan(name, fused, suffix, [_Piece(whole[0], None, None)])
                else:
                    plan = _per_expert_plan(name, layer, fused, suffix, slots, report, spec)
                if plan is not None:
                    _check_pieces(plan, spec)
                    plans.append(plan)
    _check_dtypes(plans)
    return plans


def _check_dtypes(plans: list[_ParamPlan]) -> None:
    """Every parameter of one suffix has one dtype: a format stores all its weights (or scales) alike."""
    seen: dict[str, TensorInfo] = {}
    for plan in plans:
        info = plan.pieces[0].info
        first = seen.setdefault(plan.suffix, info)
        if info.dtype != first.dtype:
            raise CheckpointError(
                info.shard, f"is {info.dtype_code}, but {first.key} ({first.shard.name}) of the same kind is "
                f"{first.dtype_code}: the header may lie about the dtype", "Re-export or re-download this shard",
                info.key)


def _per_expert_plan(name: str, layer: int, fused: str, suffix: str, slots: dict, report: LoadReport,
                     spec: MoESpec) -> _ParamPlan | None:
    halves = (0, 1) if fused == "gate_up_proj" else (None,)
    proj = {0: "gate_proj", 1: "up_proj", None: "down_proj"}
    absent = [(e, h) for e in range(spec.num_experts) for h in halves if (e, h) not in slots]
    if absent:
        report.missing += [expert_key_name(layer, e, proj[h], suffix) for e, h in absent]
        return None
    pieces = [_Piece(slots[(e, h)][0], e, h) for e in range(spec.num_experts) for h in halves]
    return _ParamPlan(name, fused, suffix, pieces)


def _check_pieces(plan: _ParamPlan, spec: MoESpec) -> None:
    """Every piece of a parameter agrees in dtype and shape, and plain weights have the spec's shape."""
    first = plan.pieces[0].info
    kinds = Counter((p.info.dtype, p.info.shape) for p in plan.pieces)
    if len(kinds) > 1:
        usual = kinds.most_common(1)[0][0]
        odd = next(p.info for p in plan.pieces if (p.info.dtype, p.info.shape) != usual)
        other = next(p.info for p in plan.pieces if (p.info.dtype, p.info.shape) == usual)
        raise CheckpointError(
            odd.shard, f"is {odd.dtype_code} {list(odd.shape)} but {other.key} ({other.shard.name}) of the same "
            f"parameter {plan.name} is {other.dtype_code} {list(other.shape)}: one of their headers lies about "
            "dtype or shape", "Re-export or re-download the shard", odd.key)
    if plan.suffix != "weight" or not first.dtype.is_floating_point:
        return  # packed and quantization tensors have format-specific shapes
    e, h, i = spec.num_experts, spec.hidden_size, spec.intermediate_size
    per_piece = {"gate_up_proj": (i, h), "down_proj": (h, i)}[plan.fused]
    whole = {"gate_up_proj": (e, 2 * i, h), "down_proj": (e, h, i)}[plan.fused]
    want = whole if plan.pieces[0].expert is None else per_piece
    if first.shape != want:
        raise CheckpointError(
            first.shard, f"has shape {list(first.shape)}, but {plan.name} needs {list(want)} per key for "
            f"E={e}, H={h}, I={i}", "Check that config.json matches the checkpoint (hidden_size, expert width, "
            "expert count), or re-export the shard", first.key)


def load_checkpoint(
    directory: Path,
    spec: MoESpec,
    remap_fn: Callable[[str], str] = remap,
    produces: KeySchema = REFERENCE_SCHEMA,
    mapping_fn: Callable[..., list[ExpertParamEntry]] = make_expert_params_mapping,
) -> LoadedCheckpoint:
    """Load every parameter into memory: `plan_checkpoint`, then the whole stream into a dict."""
    plan = plan_checkpoint(directory, spec, remap_fn, produces, mapping_fn)
    return LoadedCheckpoint(dict(plan.stream()), plan.report)
