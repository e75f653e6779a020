"""Fingerprinted checkpoints: every element of every floating-point tensor of a checkpoint directory replaced by its
own number, so that any value a loader put anywhere says which checkpoint key and which element of it it came from."""

from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

# float32 holds every integer up to 2**24 exactly: the largest fingerprint a checkpoint may need. Fingerprints start
# at 2**20, above the small integers a model's computed buffers hold (cos 0 = 1, position ids), so that a value there is
# never taken for a checkpoint element.
FINGERPRINT_LIMIT = 2**24
FIRST_FINGERPRINT = 2**20


class TooManyElements(ValueError):
    """The checkpoint holds more floating-point elements than float32 fingerprints can tell apart."""


@dataclass(frozen=True)
class LoadInput:
    """A checkpoint whose weights (before numbering) and key numbering order `seed` draws."""

    seed: int


def load_inputs() -> st.SearchStrategy[LoadInput]:
    """A seed in 0..2**16; shrinks toward 0."""
    return st.builds(LoadInput, seed=st.integers(0, 2**16))


@dataclass(frozen=True)
class Fingerprints:
    """Which fingerprints each checkpoint key holds: `keys[i]` (of shape `shapes[i]`) holds `starts[i]` and the
    following `numel` integers, element by element in row-major order."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]
    last: int

    def locate(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each of `values`: whether it is a fingerprint, the index of its key in `keys` and its flat index in that
        key's tensor (both 0 where it is not a fingerprint)."""
        flat = values.detach().reshape(-1).double()
        if not self.keys:
            nothing = torch.zeros_like(flat, dtype=torch.long)
            return torch.zeros_like(flat, dtype=torch.bool), nothing, nothing
        whole = torch.isfinite(flat) & (flat == flat.round()) & (flat >= self.starts[0]) & (flat <= self.last)
        fps = torch.where(whole, flat, torch.full_like(flat, self.starts[0])).long()
        key = torch.searchsorted(torch.tensor(self.starts), fps, right=True) - 1
        index = fps - torch.tensor(self.starts)[key]
        return whole, torch.where(whole, key, 0), torch.where(whole, index, 0)

    @property
    def count(self) -> int:
        """How many fingerprints there are; `ordinal` numbers them 0..count-1."""
        return self.last - self.starts[0] + 1 if self.keys else 0

    def ordinal(self, key: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The ordinal (0..count-1) of the fingerprint of element `index` of key number `key`."""
        return torch.tensor(self.starts)[key] + index - self.starts[0]

    def key_of(self, ordinal: int) -> tuple[str, int]:
        """The key holding the fingerprint of `ordinal`, and its flat index there."""
        fingerprint = ordinal + self.starts[0]
        i = bisect.bisect_right(self.starts, fingerprint) - 1
        return self.keys[i], fingerprint - self.starts[i]


def fingerprint_checkpoint(directory: Path, seed: int) -> Fingerprints:
    """Rewrite every `*.safetensors` file in `directory` with each floating-point tensor's elements numbered (float32;
    other tensors kept), keys numbered in the order `seed` draws, and its config.json's dtype set to float32.
    TooManyElements where the numbers would not all be exact in float32."""
    files = sorted(directory.glob("*.safetensors"))
    tensors: dict[Path, dict[str, torch.Tensor]] = {}
    metadata: dict[Path, dict[str, str] | None] = {}
    for path in files:
        with safe_open(path, "pt") as f:
            metadata[path] = f.metadata()
            tensors[path] = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no mapping
    floating = sorted(k for held in tensors.values() for k, t in held.items() if t.is_floating_point())
    random.Random(seed).shuffle(floating)
    shapes = {k: tuple(t.shape) for held in tensors.values() for k, t in held.items()}
    starts, following = [], FIRST_FINGERPRINT
    for key in floating:
        starts.append(following)
        following += max(1, int(torch.Size(shapes[key]).numel()))
    if following - 1 > FINGERPRINT_LIMIT:
        raise TooManyElements(f"{following - FIRST_FINGERPRINT} floating-point elements, over the "
                              f"{FINGERPRINT_LIMIT - FIRST_FINGERPRINT} float32 numbers from {FIRST_FINGERPRINT} "
                              "on tell apart")
    start_of = dict(zip(floating, starts, strict=True))
    for path, held in tensors.items():
        numbered = {k: (torch.arange(start_of[k], start_of[k] + t.numel(), dtype=torch.float64).reshape(t.shape)
                        .float() if k in start_of else t.contiguous()) for k, t in held.items()}
        save_file(numbered, path, metadata=metadata[path])
    config_path = directory / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        _set_float32(config)
        config_path.write_text(json.dumps(config, indent=2))
    return Fingerprints(tuple(floating), tuple(shapes[k] for k in floating), tuple(starts), following - 1)


def _set_float32(config: dict) -> None:
    """Every dtype field of the config, and of its sub-configs, set to float32."""
    for name, value in config.items():
        if name in ("dtype", "torch_dtype") and isinstance(value, str):
            config[name] = "float32"
        elif isinstance(value, dict):
            _set_float32(value)
