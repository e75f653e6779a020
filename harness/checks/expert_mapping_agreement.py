"""Part of load-parity: an engine's declared expert mapping agrees with where its weight loading put each expert tensor.

An engine that declares its expert params mapping (vLLM's `get_expert_mapping()`: (parameter name, checkpoint weight
name, expert id, shard id) entries, which its expert-parallel load balancing and several models' `load_weights` read)
claims, for each per-expert checkpoint key holding an entry's weight name: its elements go to the parameter named by
the entry, in the row of that expert on a rank holding it (on no other rank), in the part the shard names (w1 the
first half of a gate/up stack, w3 the second, w2 the down projection). What loading did is read from the
fingerprints each parameter holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch

from harness.strategies.fingerprints import Fingerprints
from harness.targets.base import LoadedParams
from reference.checkpoint import PROJ_NAMES

# A per-expert checkpoint name (`experts.3.gate_proj.`); a fused entry's expert id is a chunk index instead.
_PER_EXPERT = re.compile(r"(?:^|\.)experts\.(\d+)\.")
# The order of the parts a stacked parameter holds, by shard id: gate, up (w13), down (w2 alone).
_SHARD_ORDER = PROJ_NAMES["w"]


def mapping_disagreements(prints: Fingerprints, loaded: LoadedParams,
                          located: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[str]:
    """Each per-expert mapping entry of `loaded` whose checkpoint key's elements are not where it says, one line;
    `located`: for each expert parameter, `prints.locate`'s fingerprint mask and key index of its elements."""
    entries = [e for e in loaded.expert_mapping if _PER_EXPERT.search(e[1])]
    per_expert_keys = [k for k in prints.keys if _PER_EXPERT.search(k)]
    if not entries or not per_expert_keys:
        return
    shards = {name: sorted({e[3] for e in entries if e[0] in name}, key=_shard_rank)
              for name in loaded.experts}
    landed = _where_keys_landed(loaded, located, shards)
    matched = False
    for param_name, weight_name, expert_id, shard_id in entries:
        for key in per_expert_keys:
            if weight_name not in key:
                continue
            matched = True
            rest = key[key.index(weight_name) + len(weight_name):]
            claim = f"get_expert_mapping() says {weight_name!r} -> {param_name!r}, expert {expert_id}, shard {shard_id}"
            held = landed.get(prints.keys.index(key), [])
            wanted = [(name, rows.index(expert_id), shards[name].index(shard_id))
                      for name, rows in loaded.experts.items()
                      if name.endswith(param_name + rest) and expert_id in rows and shard_id in shards[name]]
            if not wanted:
                if held:
                    yield f"{key}: {claim} (not on this rank), but loading put it in {_describe(held)}"
                continue
            if not held or any(place not in wanted for place in held):
                yield f"{key}: {claim}, but loading put it in {_describe(held) if held else 'no parameter'}"
    if not matched:
        yield (f"get_expert_mapping() names no key of the checkpoint (its weight names: "
               f"{sorted({e[1] for e in entries})[:3]}..., the checkpoint's: {sorted(per_expert_keys)[:3]}...)")


def _shard_rank(shard_id: str) -> int:
    return _SHARD_ORDER.index(shard_id) if shard_id in _SHARD_ORDER else len(_SHARD_ORDER)


def _where_keys_landed(loaded: LoadedParams, located: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       shards: dict[str, list[str]]) -> dict[int, list[tuple[str, int, int]]]:
    """For each checkpoint key (its index), the places its elements are in: (expert parameter, row, which of the
    parameter's parts along dim 1)."""
    landed: dict[int, set[tuple[str, int, int]]] = {}
    for name, (whole, key) in located.items():
        tensor = loaded.params[name]
        if tensor.dim() < 2:
            continue
        at = torch.stack(torch.unravel_index(whole.nonzero()[:, 0], tuple(tensor.shape)), dim=1)
        part = at[:, 1] // max(1, tensor.shape[1] // max(1, len(shards.get(name, ()))))
        for k, row, p in zip(key[whole].tolist(), at[:, 0].tolist(), part.tolist(), strict=True):
            landed.setdefault(k, set()).add((name, row, p))
    return {k: sorted(places) for k, places in landed.items()}


def _describe(places: list[tuple[str, int, int]]) -> str:
    shown = ", ".join(f"{name} row {row} part {part}" for name, row, part in places[:3])
    return shown + (f" (and {len(places) - 3} more)" if len(places) > 3 else "")
