"""What keeps a checkpoint on disk from loading for its family.

It reads `config.json`, the index and every shard's safetensors header (never tensor data, never a pickle, no
network, no remote code), resolves the family's `MoESpec` with the reference's config resolution, and reports:
files the loader cannot read (a Git LFS pointer, a truncated or foreign file, pickle-only weights), shards that
disagree with the index, expert tensors mis-shaped against the config or of another dtype than their siblings,
and the reference loader's own report of missing, unexpected and conflicting keys. `run` exits as `moe-harness
run` does: 0 the checkpoint loads cleanly, 1 problems found, 2 usage error (a path that is no directory, an
unknown family, a config.json that cannot be read or resolved into an MoE spec).
"""

from __future__ import annotations

import difflib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.checks.checkpoint_roundtrip import SlotId, slot_of
from harness.families import DEFAULT_FAMILIES
from reference.checkpoint import PROJ_NAMES, REFERENCE_SCHEMA, KeySchema, parse_expert_key, remap
from reference.config import ConfigError, MoESpec, resolve_moe_spec
from reference.families import facts_named
from reference.loader import expert_key_name, param_name, plan_checkpoint
from reference.shards import INDEX_NAME, SINGLE_NAME, CheckpointError, TensorInfo, read_header, weight_map

CONFIG_NAME = "config.json"
# Weights in these files are pickles: loading one runs whatever code the file names, so they are never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
# Problem kinds, in the order the report shows them: file-level first, since they can hide the rest.
KINDS = ("files", "shards", "mis-shaped", "dtype", "conflicting", "missing", "unexpected", "loader")
# A key held out of the loader's plan (its own problem is reported) is renamed this way: with no `experts.` left in
# it the loader passes it through untouched, so one bad tensor costs its slot, not the whole report.
_HELD_OUT = "inspect-held-out:{}"
_T = TypeVar("_T")
_HALF_PROJ = {0: "gate_proj", 1: "up_proj", None: "down_proj"}


class InspectUsageError(ValueError):
    """Nothing to inspect: a path that is no directory, an unknown family, a config.json that cannot be used."""


@dataclass(frozen=True)
class Problem:
    """One thing that keeps the checkpoint from loading cleanly; `layer`/`expert` None where it is no one
    layer's or expert's (a file, a fused tensor holding every expert)."""

    kind: str  # one of KINDS
    key: str  # the tensor key or the file it is about
    detail: str
    layer: int | None = None
    expert: int | None = None


@dataclass
class Inspection:
    """What `inspect_checkpoint` found: the family and spec, what the files hold, and every problem."""

    directory: Path
    family: str = ""
    family_source: str = ""
    spec: MoESpec | None = None
    indexed: bool = False
    shards: list[str] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    layouts: Counter[KeySchema] = field(default_factory=Counter)  # schema of each expert key
    usual_layout: KeySchema | None = None  # what the family's released checkpoints use, where the harness knows
    dtypes: Counter[str] = field(default_factory=Counter)  # expert tensors' dtype codes
    other_dtypes: Counter[str] = field(default_factory=Counter)  # every other tensor's
    suffixes: Counter[str] = field(default_factory=Counter)  # expert tensors' suffixes (weight, weight_scale, ...)
    quantization: str = ""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing keeps the checkpoint from loading for the family."""
        return not self.problems

    def add(self, kind: str, key: str, detail: str, slot: SlotId | None = None) -> None:
        layer, expert = (slot[0], slot[3]) if slot else (None, None)
        self.problems.append(Problem(kind, key, detail, layer, expert))


@dataclass(frozen=True)
class _Expert:
    """One expert tensor on a MoE layer, inside the config's expert count."""

    info: TensorInfo
    slot: SlotId  # layer, fused param, suffix, expert (None: fused), half

    @property
    def group(self) -> tuple[int, str, str]:
        """The loader's unit: every piece of one fused parameter (both halves, every expert)."""
        return self.slot[:3]


def inspect_checkpoint(directory: Path, family: str | None = None) -> Inspection:
    """Everything that keeps `directory` from loading as `family` (default: config.json's model_type).

    Raises InspectUsageError when there is nothing to inspect; every problem of the checkpoint itself is a
    `Problem` of the result. Reads config.json, the index and shard headers only.
    """
    _check_directory(directory)
    result = Inspection(directory)
    if not _has_safetensors(directory, result):
        return result
    config = _read_config(directory)
    result.family, result.family_source = _family(config, family)
    result.spec = _resolve(directory, config, result.family)
    result.usual_layout = DEFAULT_FAMILIES[result.family].schema if result.family in DEFAULT_FAMILIES else None
    result.quantization = _quantization(config)
    result.tensors = _read_files(directory, result)
    held_out = _check_experts(result, result.spec)
    _loader_report(result, result.spec, held_out)
    return result


# ---- the directory, config and family ---------------------------------------------------------------------------


def _check_directory(directory: Path) -> None:
    if not directory.exists():
        raise InspectUsageError(f"{directory} does not exist; pass a checkpoint directory")
    if not directory.is_dir():
        raise InspectUsageError(f"{directory} is a file, not a checkpoint directory; pass the directory that holds "
                                f"config.json and the weights ({directory.parent})")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise InspectUsageError(f"{directory} cannot be read (permission denied)")


def _has_safetensors(directory: Path, result: Inspection) -> bool:
    """Whether there are safetensors weights to read; pickle-only weights are a problem, none at all a usage error."""
    if any(directory.glob("*.safetensors")) or (directory / INDEX_NAME).exists():
        pickles = _pickles(directory)
        if pickles:
            result.notes.append(f"pickle files left unread (never unpickled): {', '.join(pickles)}")
        return True
    pickles = _pickles(directory)
    if not pickles:
        raise InspectUsageError(f"{directory} holds no {SINGLE_NAME}, {INDEX_NAME} or other .safetensors file: "
                                "not a checkpoint directory")
    result.add("files", ", ".join(pickles), "PyTorch pickle weights only, no safetensors: moe-harness never "
               "unpickles (loading a pickle runs code the file names). Convert them to safetensors in an environment "
               "you trust (transformers: save_pretrained(dir, safe_serialization=True); or "
               "safetensors.torch.save_file)")
    return False


def _pickles(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise InspectUsageError(f"{directory} has no {CONFIG_NAME}: inspect reads the expert count and sizes from it")
    pointer = _lfs_pointer(path)
    if pointer:
        raise InspectUsageError(f"{path}: {pointer}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InspectUsageError(f"{path} cannot be read as JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise InspectUsageError(f"{path} holds a JSON {type(data).__name__}, not an object of config fields")
    return data


def _family(config: dict[str, Any], family: str | None) -> tuple[str, str]:
    """(family, where it came from); InspectUsageError for a name neither transformers nor the reference knows."""
    stored = config.get("model_type")
    name = family or (stored if isinstance(stored, str) else "")
    if not name:
        raise InspectUsageError(f"{CONFIG_NAME} names no model_type; pass --family F")
    if not _known_family(name):
        given = "--family" if family else f"{CONFIG_NAME}'s model_type"
        raise InspectUsageError(_unknown_family(name, given))
    if not family:
        return name, f"{CONFIG_NAME}'s model_type"
    return name, "--family" + ("" if stored in (None, family) else f"; {CONFIG_NAME}'s model_type is {stored!r}")


def _known_family(name: str) -> bool:
    from harness.tiny_configs import model_types

    return name in model_types() or facts_named(name) is not None


def _unknown_family(name: str, given: str) -> str:
    from harness.tiny_configs import discover_moe_families

    valid = discover_moe_families()
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    hint += "" if given == "--family" else " Pass --family F to inspect it as one of the valid families."
    return (f"unknown family {name!r} (from {given}): not a model_type of the installed transformers.{hint} "
            f"Valid families (the MoE model_types of the installed transformers, as `moe-harness run --family` "
            f"takes them): {', '.join(valid)}")


def _resolve(directory: Path, config: dict[str, Any], family: str) -> MoESpec:
    try:
        return resolve_moe_spec({**config, "model_type": family})
    except ConfigError as exc:
        raise InspectUsageError(f"{directory / CONFIG_NAME}: no MoE spec of {family} resolves from it: {exc}"
                                ) from exc


def _quantization(config: dict[str, Any]) -> str:
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return ""
    return ", ".join(f"{k}={quant[k]}" for k in ("quant_method", "format", "fmt", "bits", "weight_block_size")
                     if k in quant) or "present"


# ---- files: LFS pointers, headers, the index --------------------------------------------------------------------


def _lfs_pointer(path: Path) -> str | None:
    """What to do when `path` is a Git LFS pointer file in place of its content, else None."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return None  # read again by its reader, which says why
    if not head.startswith(LFS_POINTER):
        return None
    size = next((line.split()[1] for line in head.decode(errors="replace").splitlines()
                 if line.startswith("size ") and len(line.split()) == 2), "?")
    repo = next((p for p in path.resolve().parents if (p / ".git").exists()), None)
    if repo is None:
        where = "in the git clone this directory came from (no .git above it here), or download the file itself"
    else:
        only = path.resolve().relative_to(repo)
        where = f"in {repo} (`git -C {repo} lfs pull --include \"{only}\"` for this file only)"
    return (f"a Git LFS pointer ({head.splitlines()[0].decode(errors='replace')}, {size} bytes of content not "
            f"fetched), not the file's content. Run `git lfs pull` {where}")


def _read_files(directory: Path, result: Inspection) -> dict[str, TensorInfo]:
    """Every tensor whose shard reads cleanly; each file the loader would refuse, and each disagreement
    between the index and the shards, is a problem of `result`."""
    weight_map = _index(directory, result)
    if weight_map is not None:
        result.indexed = True
        result.shards = sorted(set(weight_map.values()))
    elif (directory / SINGLE_NAME).exists():
        result.shards = [SINGLE_NAME]
    else:
        result.shards = sorted(p.name for p in directory.glob("*.safetensors"))
        if not (directory / INDEX_NAME).exists():
            result.add("files", ", ".join(result.shards), f"neither {INDEX_NAME} nor {SINGLE_NAME} is present, so a "
                       "loader cannot tell which files to read; write the index (save_pretrained writes it)")
    read = {name: _header(directory, name, weight_map, result) for name in result.shards}
    headers = {name: header for name, header in read.items() if header is not None}
    tensors: dict[str, TensorInfo] = {}
    for name, header in headers.items():
        for key, info in header.items():
            if key in tensors:
                result.add("shards", key, f"held by both {tensors[key].shard.name} and {name}: keep one copy and "
                           "regenerate the index", slot_of(key))
            tensors.setdefault(key, info)
    if weight_map is not None:
        _compare_index(weight_map, headers, tensors, result)
    strays = sorted(p.name for p in directory.glob("*.safetensors") if p.name not in result.shards)
    if strays:
        why = f"not named by {INDEX_NAME}" if result.indexed else f"a loader reads {SINGLE_NAME} alone"
        result.notes.append(f"left unread, as loaders leave them ({why}): {', '.join(strays)}")
    return tensors


def _index(directory: Path, result: Inspection) -> dict[str, str] | None:
    """The index's weight map; None without an index (or with one that cannot be read: a problem then)."""
    path = directory / INDEX_NAME
    return _read_file(path, weight_map, result) if path.exists() else None


def _header(directory: Path, name: str, weight_map: dict[str, str] | None, result: Inspection
            ) -> dict[str, TensorInfo] | None:
    """One shard's validated header, or None with the reason as a problem (missing, LFS pointer, corrupt)."""
    path = directory / name
    if not path.is_file():
        keys = [k for k, v in (weight_map or {}).items() if v == name]
        result.add("shards", name, f"{INDEX_NAME} names this shard for {len(keys)} tensors (first {keys[0]!r}), but "
                   "it does not exist: copy it into the directory, or regenerate the index from the shards there")
        return None
    return _read_file(path, read_header, result)


def _read_file(path: Path, read: Callable[[Path], _T], result: Inspection) -> _T | None:
    """`read(path)`, or None with the reason as a `files` problem: a Git LFS pointer, a file the loader's reader
    refuses (its message: what is wrong, which tensor, what to do), a file the system cannot read."""
    pointer = _lfs_pointer(path)
    if pointer:
        result.add("files", path.name, pointer)
        return None
    try:
        return read(path)
    except CheckpointError as exc:
        tensor = f" (tensor {exc.key!r})" if exc.key else ""
        result.add("files", path.name, f"{exc.problem}{tensor}. {exc.advice}")
    except OSError as exc:
        result.add("files", path.name, f"cannot be read: {type(exc).__name__}: {exc}")
    return None


def _compare_index(weight_map: dict[str, str], headers: dict[str, dict[str, TensorInfo]],
                   tensors: dict[str, TensorInfo], result: Inspection) -> None:
    """A key the index puts in a (readable) shard that lacks it; a key a shard holds that the index omits."""
    for key, name in weight_map.items():
        if name in headers and key not in headers[name]:
            where = f"it is in {tensors[key].shard.name}" if key in tensors else "no shard holds it"
            result.add("shards", key, f"{INDEX_NAME} puts it in {name}, which lacks it ({where}): regenerate the "
                       "index from the shards", slot_of(key))
    for key, info in tensors.items():
        if key not in weight_map:
            result.add("shards", key, f"{info.shard.name} holds it but {INDEX_NAME} does not list it: loaders that "
                       "follow the index never see it; regenerate the index", slot_of(key))


# ---- expert tensors against the config --------------------------------------------------------------------------


def _check_experts(result: Inspection, spec: MoESpec) -> set[str]:
    """Shape and dtype problems of the expert tensors (and the routers); the keys to hold out of the loader's plan."""
    experts: list[_Expert] = []
    for key, info in result.tensors.items():
        parts = parse_expert_key(key)
        slot = slot_of(key)
        if parts is None or slot is None:
            result.other_dtypes[info.dtype_code] += 1
            continue
        result.layouts[_schema_of(parts)] += 1
        result.dtypes[info.dtype_code] += 1
        result.suffixes[slot[2]] += 1
        if slot[0] in spec.moe_layers and (slot[3] is None or slot[3] < spec.num_experts):
            experts.append(_Expert(info, slot))  # others are the loader's unexpected keys
    held = _shape_problems(experts, spec, result) | _sibling_problems(experts, result)
    held |= _dtype_problems(experts, result)
    _router_problems(result, spec)
    return held


def _schema_of(parts: dict[str, str]) -> KeySchema:
    fused = "fused" in parts
    return KeySchema(parts.get("prefix", ""), parts.get("block", ""), "fused" if fused else "per_expert",
                     "w" if parts.get("proj", "").startswith("w") else "proj")


def _expected_shape(slot: SlotId, spec: MoESpec) -> tuple[int, ...] | None:
    """The shape the config gives a plain (float) `weight` or `bias` tensor of `slot`; None for other suffixes,
    whose shapes are the quantization format's."""
    _, param, suffix, expert, _ = slot
    e, h, i = spec.num_experts, spec.hidden_size, spec.intermediate_size
    out, inner = (i, h) if param == "gate_up_proj" else (h, i)
    per = {"weight": (out, inner), "bias": (out,)}.get(suffix)
    if per is None:
        return None
    if expert is not None:
        return per
    return (e, out * (2 if param == "gate_up_proj" else 1), *per[1:])


def _shape_problems(experts: list[_Expert], spec: MoESpec, result: Inspection) -> set[str]:
    bad = set()
    for x in experts:
        want = _expected_shape(x.slot, spec)
        if want is None or not x.info.dtype.is_floating_point or x.info.shape == want:
            continue
        hint = ""
        if x.slot[3] is None and len(want) == 3 and x.info.shape == (*want[:1], *want[:0:-1]):
            hint = "; it looks transposed (input-major, as Llama 4 and Aria releases store fused experts)"
        result.add("mis-shaped", x.info.key, f"{list(x.info.shape)}, the config needs {list(want)}{hint}", x.slot)
        bad.add(x.info.key)
    plain = [x for x in experts if _expected_shape(x.slot, spec) and x.info.dtype.is_floating_point]
    if plain and len(bad) == len(plain):
        result.notes.append("every plain expert tensor disagrees with the config: check that config.json's expert "
                            f"count ({spec.spellings.get('num_experts')}), hidden size "
                            f"({spec.spellings.get('hidden_size')}) and expert width "
                            f"({spec.spellings.get('intermediate_size')}) are this checkpoint's")
    return bad


def _odd_ones(groups: dict[Any, list[_Expert]], value: Callable[[_Expert], str], label: Callable[[Any], str],
              kind: str, result: Inspection) -> set[str]:
    """In each group, the tensors whose `value` differs from the group's most common one become `kind` problems
    (`label(group)` names what the others are); their keys."""
    bad = set()
    for group, items in groups.items():
        usual, count = Counter(value(x) for x in items).most_common(1)[0]
        for x in items:
            if value(x) != usual:
                result.add(kind, x.info.key, f"{value(x)}, while {count} other {label(group)} are {usual}", x.slot)
                bad.add(x.info.key)
    return bad


def _sibling_problems(experts: list[_Expert], result: Inspection) -> set[str]:
    """Quantization tensors (shapes are the format's): the pieces of one parameter agree with each other."""
    groups: dict[tuple[int, str, str], list[_Expert]] = defaultdict(list)
    for x in experts:
        if x.slot[3] is not None and not (x.slot[2] in ("weight", "bias") and x.info.dtype.is_floating_point):
            groups[x.group].append(x)
    return _odd_ones(groups, lambda x: str(list(x.info.shape)), lambda g: f"pieces of layer {g[0]} {g[1]}.{g[2]}",
                     "mis-shaped", result)


def _dtype_problems(experts: list[_Expert], result: Inspection) -> set[str]:
    """Every expert tensor of one suffix has one dtype (a format stores all its weights, or scales, alike)."""
    by_suffix: dict[str, list[_Expert]] = defaultdict(list)
    for x in experts:
        by_suffix[x.slot[2]].append(x)
    return _odd_ones(by_suffix, lambda x: x.info.dtype_code, lambda suffix: f"expert .{suffix} tensors", "dtype",
                     result)


def _router_problems(result: Inspection, spec: MoESpec) -> None:
    """Each MoE layer's router (`<block>.gate.weight` in the spellings the experts use) scores E experts of H."""
    want = (spec.num_experts, spec.hidden_size)
    routers = {schema.neighbour_keys(layer, True, kinds=("router",))["router"]: layer
               for schema in result.layouts for layer in spec.moe_layers}
    for key, layer in routers.items():
        info = result.tensors.get(key)
        if info is not None and info.dtype.is_floating_point and info.shape != want:
            result.problems.append(Problem("mis-shaped", key, f"router {list(info.shape)}, the config needs "
                                           f"{list(want)} (E={want[0]}, H={want[1]})", layer))


# ---- the loader's own report ------------------------------------------------------------------------------------


def _loader_report(result: Inspection, spec: MoESpec, held_out: set[str]) -> None:
    """Missing, unexpected and conflicting keys as the reference loader's plan reports them, with the held-out
    keys (whose problem is already reported) left out of its plan so the rest of the report stands."""

    def remap_fn(key: str) -> str:
        return _HELD_OUT.format(key.replace(".", "/")) if key in held_out else remap(key)

    try:
        plan = plan_checkpoint(result.directory, spec, remap_fn=remap_fn)
    except CheckpointError as exc:
        if any(p.kind in ("files", "shards") for p in result.problems):
            result.notes.append("missing, unexpected and conflicting keys were not checked: the loader stops at the "
                                f"file problems above (at {Path(exc.file).name}); fix them and inspect again")
        else:
            result.add("loader", Path(exc.file).name, str(exc), slot_of(exc.key or ""))
        return
    report = plan.report
    held_slots = {_slot_name(s) for k in held_out if (s := slot_of(k))}
    for name in report.missing:
        slot = slot_of(name)
        if name not in held_slots and slot is not None:
            result.add("missing", _spelled(slot, result.layouts), _why_missing(slot, spec), slot)
    for key in report.unexpected:
        result.add("unexpected", key, _why_unexpected(key, report.renamed.get(key), spec), slot_of(key))
    for name, keys in report.conflicts.items():
        result.add("conflicting", name, _why_conflict(keys), slot_of(name))


def _slot_name(slot: SlotId) -> str:
    """The name the loader reports a slot missing under."""
    layer, param, suffix, expert, half = slot
    return param_name(layer, param, suffix) if expert is None else expert_key_name(layer, expert, _HALF_PROJ[half],
                                                                                     suffix)


def _spelled(slot: SlotId, layouts: Counter[KeySchema]) -> str:
    """The key of a slot in the checkpoint's own (most used) spelling; a pattern for a whole parameter the
    checkpoint holds per expert."""
    layer, param, suffix, expert, half = slot
    schema = layouts.most_common(1)[0][0] if layouts else REFERENCE_SCHEMA
    root = schema.layer_root(layer) + "experts."
    names = dict(zip((0, 1, None), PROJ_NAMES["proj" if schema.layout == "fused" else schema.names], strict=True))
    if expert is not None:
        return f"{root}{expert}.{names[half]}.{suffix}"
    if schema.layout == "fused":
        return root + param + ("" if suffix == "weight" else f".{suffix}")
    projs = f"{{{names[0]},{names[1]}}}" if param == "gate_up_proj" else names[None]
    return f"{root}*.{projs}.{suffix}"


def _why_missing(slot: SlotId, spec: MoESpec) -> str:
    if slot[3] is not None:
        return "no key fills this slot"
    return (f"no key for any of its {spec.num_experts} experts, per-expert or fused (the config makes layer "
            f"{slot[0]} a MoE layer)")


def _why_unexpected(key: str, renamed: str | None, spec: MoESpec) -> str:
    slot = slot_of(key)
    if slot is None:
        return "an `experts.` key outside the key grammar (an unknown projection or suffix)" + (
            f"; remapped to {renamed}" if renamed else "")
    layer, expert = slot[0], slot[3]
    if layer not in spec.moe_layers:
        return f"layer {layer} has no routed experts by the config (MoE layers: {format_ranges(spec.moe_layers)})"
    if expert is not None and expert >= spec.num_experts:
        return f"expert {expert} is beyond the config's {spec.num_experts} experts (0-{spec.num_experts - 1})"
    return "no expert slot takes it"


def _why_conflict(keys: list[str]) -> str:
    by_layout: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        parts = parse_expert_key(key)
        by_layout[_schema_of(parts).id if parts else "?"].append(key)
    return f"claimed by {len(by_layout)} layouts/spellings at once, so the loader refuses to pick one: " + "; ".join(
        f"{layout} ({len(ks)} key{'s' if len(ks) > 1 else ''}, e.g. {ks[0]})" for layout, ks in by_layout.items())


def format_ranges(numbers: tuple[int, ...] | list[int]) -> str:
    """`0-3, 5, 7-8` for [0, 1, 2, 3, 5, 7, 8]; `none` for none."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs) or "none"
