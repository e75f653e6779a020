"""load-parity: an engine's own weight loading puts every checkpoint tensor exactly where the checkpoint meant it.

The checkpoint is the family's tiny transformers model written by `save_pretrained` (the key layout of its published
checkpoints: per-expert or fused experts, wrapper prefixes, shared experts), every floating-point element then
replaced by its own number (`harness/strategies/fingerprints.py`). The engine builds the model as it serves it, every
parameter filled with NaN, and runs its own weight loading over the directory, on one rank or sharded. Then, from
what each parameter holds:
- nothing is left at its initial value, and nothing holds a value no checkpoint tensor holds;
- every checkpoint element is loaded on some rank, and on no rank twice;
- every parameter holds its layer's tensors (the layer index in its name and the key's agree), a row of a stacked
  experts parameter holds the expert the engine says that row is (its expert map), and each piece of a checkpoint
  tensor in a parameter is a slice of it (a regular, possibly transposed, block: not a reshape that scrambles it);
- a fused parameter stacks its parts in the order the engine declares (gate before up, q before k before v);
- where the engine declares an expert params mapping, each per-expert key is where the mapping says
  (`harness/checks/expert_mapping_agreement.py`).
What the engine does on purpose it declares per rank, each with the reason its code gives (`LoadedParams.derived`,
`reordered`, `unused`, `zeroed`: a rank holding zeros where another holds the slice, which must then be all zeros):
only those tensors are judged less strictly. A failure names the parameter, the checkpoint key
it holds or should hold and what it holds instead.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from harness.assertions import fail
from harness.checks.base import Check, call_target
from harness.checks.expert_mapping_agreement import mapping_disagreements
from harness.families import Family
from harness.strategies.fingerprints import (
    Fingerprints,
    LoadInput,
    TooManyElements,
    fingerprint_checkpoint,
    load_inputs,
)
from harness.targets.base import LoadedParams, WeightLoaderCap
from harness.targets.transformers.written import write_checkpoint
from harness.verdict import CheckSkipped, harness_limit

_LAYER = re.compile(r"(?:^|\.)(?:layers|blocks|layer|h)\.(\d+)\.")
_EXPERT = re.compile(r"(?:^|\.)experts\.(\d+)\.")
# How many of a failure's problems its message lists.
SHOWN = 12


def check_load_parity(cap: WeightLoaderCap, family: Family, example: LoadInput) -> None:
    with tempfile.TemporaryDirectory(prefix=f"moe-harness-{family.name}-") as tmp:
        directory = Path(tmp)
        if cap.isolated_writer:
            from harness.targets.transformers.writer import WRITER

            WRITER.write(family.name, example.seed, directory)
        else:
            write_checkpoint(family.name, example.seed, directory)
        try:
            prints = fingerprint_checkpoint(directory, example.seed)
        except TooManyElements as exc:
            raise CheckSkipped(harness_limit(f"our tiny {family.name} checkpoint is too large to fingerprint: {exc}")) from exc
        problems = []
        for sharding in cap.shardings:
            ranks = call_target(f"load(directory, {sharding!r})", cap.load, directory, sharding, returns=tuple)
            problems += [f"[{sharding}] {line}" for line in judge(prints, ranks, cap.fused_parts)]
    if problems:
        fail(f"{family.name}: the engine's weight loading of the fingerprinted checkpoint ({', '.join(cap.shardings)})",
             f"{len(problems)} problem(s); the first {min(len(problems), SHOWN)}:\n  " + "\n  ".join(problems[:SHOWN]),
             problems[0], "every parameter exactly its slice of the checkpoint, every checkpoint element loaded once",
             problems=problems[:SHOWN])


def judge(prints: Fingerprints, ranks: tuple[LoadedParams, ...],
          fused_parts: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = ()) -> list[str]:
    """Every way the ranks' parameters (and the buffers holding checkpoint elements) differ from the fingerprinted
    checkpoint's tensors, one line each."""
    problems: list[str] = []
    loaded_anywhere = torch.zeros(prints.count, dtype=torch.bool)
    for loaded in ranks:
        tag = f"rank {loaded.rank}: " if len(ranks) > 1 else ""
        count = torch.zeros(prints.count, dtype=torch.long)
        held = {**loaded.buffers, **loaded.params}
        located: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # each expert parameter's fingerprints
        for name, tensor in sorted(held.items()):
            if name in loaded.derived:
                problems += [tag + line for line in _derived(name, tensor, loaded.derived[name], prints, count)]
                continue
            if name in loaded.zeroed:  # its slice is loaded on another rank: held there, judged there
                if tensor.count_nonzero():
                    problems.append(f"{tag}{name} should hold zeros on this rank ({loaded.zeroed[name]}) but holds "
                                    f"{int(tensor.count_nonzero())} nonzero elements")
                continue
            whole, key, index = prints.locate(tensor)
            if name in loaded.experts and name in loaded.params:
                located[name] = (whole, key)
            count += torch.bincount(prints.ordinal(key[whole], index[whole]), minlength=prints.count)
            if name in loaded.params:
                problems += [tag + line for line in _content(name, tensor, whole)]
            problems += [tag + line for line in _placement(name, tensor.shape, whole, key, index,
                                                           loaded.experts.get(name), prints, fused_parts,
                                                           name in loaded.reordered, len(ranks) > 1)]
        for unused in loaded.unused:
            if unused in prints.keys:
                count[_ordinals_of(prints, unused)] += 1
        problems += [tag + line for line in _twice(count, held, prints)]
        problems += [tag + line for line in mapping_disagreements(prints, loaded, located)]
        loaded_anywhere |= count > 0
    problems += list(_never_loaded(loaded_anywhere, prints, len(ranks)))
    return problems


def _ordinals_of(prints: Fingerprints, key: str) -> torch.Tensor:
    """The ordinals of every element of checkpoint `key`."""
    i = prints.keys.index(key)
    first = prints.starts[i] - prints.starts[0]
    return torch.arange(first, first + int(torch.Size(prints.shapes[i]).numel()))


def _derived(name: str, tensor: torch.Tensor, source: str, prints: Fingerprints, count: torch.Tensor) -> Iterator[str]:
    """A parameter the engine computes from checkpoint `source`: written everywhere, from a key that exists (whose
    elements it then counts as loaded)."""
    if source not in prints.keys:
        yield f"{name}: computed from {source}, which the checkpoint does not hold"
        return
    count[_ordinals_of(prints, source)] += 1
    if tensor.isnan().any():
        yield f"{name}: {int(tensor.isnan().sum())} of {tensor.numel()} elements never written (computed from {source})"


def _content(name: str, tensor: torch.Tensor, whole: torch.Tensor) -> Iterator[str]:
    flat = tensor.detach().reshape(-1)
    unset = flat.isnan()
    if unset.any():
        first = _at(int(unset.nonzero()[0]), tensor.shape)
        yield (f"{name} {tuple(tensor.shape)}: {int(unset.sum())} of {flat.numel()} elements never written by the "
               f"loader (still NaN; first at {first})")
    foreign = ~whole & ~unset
    if foreign.any():
        i = int(foreign.nonzero()[0])
        yield (f"{name} {tuple(tensor.shape)}: {int(foreign.sum())} of {flat.numel()} elements hold values no "
               f"checkpoint tensor holds (first {float(flat[i]):.6g} at {_at(i, tensor.shape)})")


def _placement(name: str, shape: torch.Size, whole: torch.Tensor, key: torch.Tensor, index: torch.Tensor,
               experts: tuple[int, ...] | None, prints: Fingerprints,
               fused_parts: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...], reordered: bool,
               sharded: bool) -> Iterator[str]:
    """Layer, expert row, slice and part order of the checkpoint pieces one parameter holds. Sharded, a parameter the
    engine stacks from parts (q/k/v, a Mamba projection's segments) holds one run of rows per part, however many it
    declares: each run must still be a slice; one rank already judged the parameter whole."""
    if not whole.any():
        return
    positions = whole.nonzero()[:, 0]
    rows = positions // max(1, int(torch.Size(shape[1:]).numel())) if experts is not None else None
    layer = _LAYER.search(name)
    parts = next((p for suffix, p in fused_parts if name.endswith(suffix)), None)
    pieces = None if sharded else len(parts) if parts is not None else 1
    for k in key[whole].unique().tolist():
        source = prints.keys[k]
        mine = key[whole] == k
        their_layer = _LAYER.search(source)
        if layer and their_layer and layer.group(1) != their_layer.group(1):
            yield f"{name} (layer {layer.group(1)}) holds {source} (layer {their_layer.group(1)})"
            continue
        src_index = index[whole][mine]
        if experts is not None and rows is not None:
            yield from _experts_agree(name, experts, rows[mine], source, prints.shapes[k], src_index)
            for row in ([] if reordered else rows[mine].unique().tolist()):
                in_row = rows[mine] == row
                if not _is_slice(positions[mine][in_row], shape, src_index[in_row], prints.shapes[k], pieces,
                                 row_dim=1):
                    yield f"{name} [expert row {row}] holds {source}'s elements rearranged, not a slice of it"
                    break
        elif not reordered and not _is_slice(positions[mine], shape, src_index, prints.shapes[k], pieces):
            yield f"{name} holds {source}'s elements rearranged, not a slice of it"
    if parts is not None:
        yield from _part_order(name, shape, positions, key[whole], prints, parts)


def _experts_agree(name: str, experts: tuple[int, ...], rows: torch.Tensor, source: str, source_shape: tuple[int, ...],
                   src_index: torch.Tensor) -> Iterator[str]:
    named = _EXPERT.search(source)
    if named is not None:
        theirs = torch.full_like(rows, int(named.group(1)))
    elif len(source_shape) >= 3:  # a fused experts tensor: the expert is its leading index
        theirs = src_index // max(1, int(torch.Size(source_shape[1:]).numel()))
    else:
        return
    mine = torch.tensor(experts)[rows]
    wrong = mine != theirs
    if wrong.any():
        i = int(wrong.nonzero()[0])
        yield (f"{name}: row {int(rows[i])} is expert {int(mine[i])} (the engine's expert map) but holds expert "
               f"{int(theirs[i])} of {source}")


def _is_slice(positions: torch.Tensor, shape: torch.Size, src_index: torch.Tensor, source_shape: tuple[int, ...],
              pieces: int | None = 1, row_dim: int = 0) -> bool:
    """Whether the source indices are an affine function of the parameter indices (a slice, possibly transposed or
    strided, of the source tensor) on each of at most `pieces` (None: any number of) runs of consecutive rows of the
    parameter along `row_dim` (a fused source's parts, each sharded, land as one run per part)."""
    mine = _unravel(positions, tuple(shape))
    theirs = _unravel(src_index, source_shape).double()
    rows = mine[:, min(row_dim, len(shape) - 1)] if len(shape) else mine[:, 0]
    runs, start = 0, None
    for row in rows.unique().tolist():
        if start is not None and _affine(mine[(rows >= start) & (rows <= row)], theirs[(rows >= start) & (rows <= row)]):
            continue
        if not _affine(mine[rows == row], theirs[rows == row]):
            return False
        runs, start = runs + 1, row
    return pieces is None or runs <= pieces


def _affine(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether `theirs` [n, d] is an integer affine function of `mine` [n, c]."""
    mine = mine.double()
    varying = mine[:, (mine != mine[:1]).any(dim=0)]  # a constant index column would make the fit's solution ambiguous
    design = torch.cat([varying, torch.ones(len(mine), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, theirs).solution.round()
    return bool(torch.equal(design @ solution, theirs))


def _unravel(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Row-major multi-indices [n, len(shape)] of flat indices (a scalar's shape gives [n, 1] of the flat index)."""
    if not shape:
        return flat[:, None]
    return torch.stack(torch.unravel_index(flat, shape), dim=1)


def _part_order(name: str, shape: torch.Size, positions: torch.Tensor, keys: torch.Tensor, prints: Fingerprints,
                parts: tuple[tuple[str, ...], ...]) -> Iterator[str]:
    """The parts of a fused parameter come in the declared order along its stacked dim (-2 of a matrix, 0 of a
    vector), within each leading slice (each expert of a stacked one)."""
    index = _unravel(positions, tuple(shape))
    row_dim = max(0, len(shape) - 2)
    part_of = []
    for k in keys.tolist():
        module = prints.keys[k].rsplit(".", 2)[-2] if prints.keys[k].count(".") >= 1 else ""
        part_of.append(next((i for i, names in enumerate(parts) if module in names), -1))
    part = torch.tensor(part_of)
    known = part >= 0
    outer = index[:, :row_dim].tolist() if row_dim else [[]] * len(index)
    seen: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for o, row, p, ok in zip(outer, index[:, row_dim].tolist(), part.tolist(), known.tolist(), strict=True):
        if ok:
            seen.setdefault(tuple(o), []).append((row, p))
    for slice_at, rows in seen.items():
        order = [p for _, p in sorted(set(rows))]
        if order != sorted(order):
            stacked = [parts[p][0] for p in dict.fromkeys(order)]
            yield (f"{name}{list(slice_at) if slice_at else ''}: stacks {stacked} where the declared order is "
                   f"{[p[0] for p in parts]}")
            return


def _twice(count: torch.Tensor, held: dict[str, torch.Tensor], prints: Fingerprints) -> Iterator[str]:
    twice = (count > 1).nonzero()[:, 0]
    by_key: dict[str, list[int]] = {}
    for ordinal in twice.tolist():
        key, _ = prints.key_of(ordinal)
        by_key.setdefault(key, []).append(ordinal)
    for key, ordinals in sorted(by_key.items()):
        first = ordinals[0] + prints.starts[0]
        holders = [n for n, t in sorted(held.items()) if bool((t.detach().reshape(-1) == first).any())]
        yield f"{key}: {len(ordinals)} element(s) loaded more than once (the first of them into {holders})"


def _never_loaded(anywhere: torch.Tensor, prints: Fingerprints, ranks: int) -> Iterator[str]:
    missing = ~anywhere
    if not missing.any():
        return
    by_key: dict[str, int] = {}
    for fp in missing.nonzero()[:, 0].tolist():
        key, _ = prints.key_of(fp)
        by_key[key] = by_key.get(key, 0) + 1
    where = "any rank's" if ranks > 1 else "any"
    for key, n in sorted(by_key.items()):
        size = int(torch.Size(prints.shapes[prints.keys.index(key)]).numel())
        yield f"{key}: {n} of {size} elements loaded into no parameter (not in {where} parameter)"


def _at(flat: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(shape))) if len(shape) else ()


def describe(example: LoadInput) -> dict[str, Any]:
    """The example, and the calls that write the same checkpoint again."""
    return {"seed": example.seed,
            "rebuild": f"harness.targets.transformers.saved_model.write_model_checkpoint(family, {example.seed}, "
                       f"directory); harness.strategies.fingerprints.fingerprint_checkpoint(directory, "
                       f"{example.seed})"}


LOAD_PARITY: Check[WeightLoaderCap] = Check(
    name="load-parity",
    capability="weight_loader",
    summary="the engine's own weight loading puts every element of a fingerprinted checkpoint exactly once, in the "
            "parameter slice the checkpoint meant it for, under every sharding it declares (one rank, TP 2, EP 2)",
    draws=lambda cap, family: load_inputs(),
    holds=check_load_parity,
    describe=describe,
    needs_spec=False,
)
