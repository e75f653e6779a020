"""Safetensors checkpoint directories: the index, each shard's header, and streamed tensor reads.

Nothing here unpickles or reads a whole file: headers are read on their own (8-byte length, then the
JSON), and tensor data is read one tensor at a time through `safetensors.safe_open`. Every problem
with the files raises `CheckpointError`, whose message names the file, the tensor and what to do.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# A header is a few KB per thousand tensors; anything this large is not a safetensors header.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Safetensors dtype codes (the format's spelling) and the torch dtypes they hold.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}

# First bytes of files that people save under a .safetensors name by mistake.
_FOREIGN_MAGIC = {b"PK\x03\x04": "a zip archive (torch.save output)", b"\x80": "a Python pickle"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded as it is; the message names the file, the tensor and a fix."""

    def __init__(self, file: Path | str, problem: str, advice: str, key: str | None = None) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        self.advice = advice
        where = f"{self.file}" + (f", tensor {key!r}" if key else "")
        super().__init__(f"{where}: {problem}. {advice}.")


_REEXPORT = "Re-export or re-download this shard"


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: where a tensor lives and what it claims to be."""

    shard: Path
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def dtype_code(self) -> str:
        return next(code for code, dtype in DTYPES.items() if dtype == self.dtype)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors a shard's header declares, after checking the header against the file itself.

    Guarantees for every returned entry: a known dtype, a non-negative shape, a byte range equal to
    shape × itemsize, ranges that tile the data section without gaps or overlaps, and a data section
    that the file actually holds (so a truncated shard is refused here, before any tensor is read).
    """
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(path, f"file has {size} bytes, fewer than the 8-byte header length",
                              f"The file is empty or cut short. {_REEXPORT}")
    with path.open("rb") as f:
        head = f.read(8)
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER_BYTES):
            kind = next((what for magic, what in _FOREIGN_MAGIC.items() if head.startswith(magic)), None)
            problem = (f"not a safetensors file: it is {kind}" if kind else
                       f"header length {length} exceeds the file ({size} bytes); not a safetensors file")
            raise CheckpointError(path, problem, "Convert it with safetensors.torch.save_file from a trusted "
                                  "environment; this loader never unpickles")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"header is not valid JSON ({exc})", _REEXPORT) from exc
    if not isinstance(header, dict):
        raise CheckpointError(path, "header is not a JSON object", _REEXPORT)
    header.pop("__metadata__", None)
    entries = {key: _entry(path, key, value) for key, value in header.items()}
    _check_tiling(path, header, size - 8 - length)
    return entries


def _entry(path: Path, key: str, value: object) -> TensorInfo:
    if not isinstance(value, dict) or value.get("dtype") not in DTYPES:
        dtype = value.get("dtype") if isinstance(value, dict) else value
        raise CheckpointError(path, f"unknown or missing dtype {dtype!r}",
                              f"Supported dtypes: {', '.join(DTYPES)}. {_REEXPORT}", key)
    shape, offsets = value.get("shape"), value.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CheckpointError(path, f"shape {shape!r} is not a list of non-negative integers", _REEXPORT, key)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(path, f"data_offsets {offsets!r} is not a [begin, end] byte range", _REEXPORT, key)
    dtype = DTYPES[value["dtype"]]
    want = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != want:
        raise CheckpointError(
            path, f"header says {value['dtype']} {shape} ({want} bytes) but its byte range "
            f"{offsets} holds {offsets[1] - offsets[0]} bytes: the header lies about dtype, shape or offsets",
            _REEXPORT, key)
    return TensorInfo(path, key, dtype, tuple(shape))


def _check_tiling(path: Path, header: dict, data_bytes: int) -> None:
    # Ranges must tile [0, end) in order; otherwise two tensors share bytes or bytes belong to none.
    end = 0
    for key, value in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, stop = value["data_offsets"]
        if begin != end:
            problem = "overlaps the tensor before it" if begin < end else f"leaves a gap of {begin - end} bytes"
            raise CheckpointError(path, f"byte range {value['data_offsets']} {problem}",
                                  f"The header's data_offsets are corrupt. {_REEXPORT}", key)
        end = stop
    if end > data_bytes:
        last = max(header, key=lambda k: header[k]["data_offsets"][1])
        raise CheckpointError(path, f"truncated: the header needs {end} data bytes, the file holds {data_bytes}",
                              f"The download or copy was cut short. {_REEXPORT}", last)
    if end < data_bytes:
        raise CheckpointError(path, f"{data_bytes - end} bytes after the last tensor belong to no tensor",
                              _REEXPORT)


def read_index(directory: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint in `directory`, each in exactly one shard, headers validated.

    Reads `model.safetensors.index.json` when present (every shard it names must exist and hold the keys
    it assigns), else the single `model.safetensors`. A key held by two shards is refused, naming both.
    """
    index_path = directory / INDEX_NAME
    if not index_path.exists():
        single = directory / SINGLE_NAME
        if not single.exists():
            raise CheckpointError(directory, f"neither {INDEX_NAME} nor {SINGLE_NAME} is present",
                                  "Point the loader at a directory written by save_pretrained or save_file")
        return read_header(single)
    assigned = weight_map(index_path)
    tensors: dict[str, TensorInfo] = {}
    for shard_name in sorted(set(assigned.values())):
        shard = directory / shard_name
        if not shard.is_file():
            key = next(k for k, v in assigned.items() if v == shard_name)
            raise CheckpointError(index_path, f"names shard {shard_name!r}, which does not exist", "Copy the "
                                  "missing shard into the directory, or regenerate the index from the shards "
                                  "that are there", key)
        for key, info in read_header(shard).items():
            if key in tensors:
                raise CheckpointError(shard, f"holds a tensor that {tensors[key].shard.name} also holds",
                                      "Keep each tensor in exactly one shard: delete one copy and regenerate "
                                      "the index", key)
            tensors[key] = info
    for key, shard_name in assigned.items():
        if tensors.get(key) is None or tensors[key].shard.name != shard_name:
            where = f"it is in {tensors[key].shard.name}" if key in tensors else "no shard holds it"
            raise CheckpointError(index_path, f"assigns the tensor to {shard_name}, but {where}",
                                  "Regenerate the index from the shards", key)
    return tensors


def weight_map(index_path: Path) -> dict[str, str]:
    """The index's tensor name -> shard file name; a CheckpointError saying what to do when it is unreadable."""
    try:
        data = json.loads(index_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(index_path, f"is not valid JSON ({exc})", "Regenerate the index") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(index_path, "has no 'weight_map' object of tensor name -> shard file name",
                              "Regenerate the index")
    return weight_map


class ShardReader:
    """Reads single tensors from open shards; errors name the shard and the tensor."""

    def __init__(self, handles: dict[Path, object]) -> None:
        self._handles = handles

    def read(self, info: TensorInfo) -> torch.Tensor:
        """The tensor `info` names, as the header declared it (dtype and shape re-checked)."""
        try:
            tensor = self._handles[info.shard].get_tensor(info.key)  # type: ignore[attr-defined]
        except Exception as exc:
            raise CheckpointError(info.shard, f"reading failed: {type(exc).__name__}: {exc}", _REEXPORT,
                                  info.key) from exc
        if tensor.dtype != info.dtype or tuple(tensor.shape) != info.shape:
            raise CheckpointError(info.shard, f"read {tensor.dtype} {tuple(tensor.shape)}, header declared "
                                  f"{info.dtype} {info.shape}", _REEXPORT, info.key)
        return tensor


@contextmanager
def open_shards(shards: set[Path]) -> Iterator[ShardReader]:
    """Open every shard for reading one tensor at a time.

    The `pread` backend copies each tensor's bytes on request instead of mapping the file, so the pages
    of tensors already read do not stay resident: peak memory follows the tensors in use, not the shard.
    """
    with ExitStack() as stack:
        handles: dict[Path, object] = {}
        for shard in sorted(shards):
            try:
                handles[shard] = stack.enter_context(safe_open(shard, framework="pt", backend="pread"))
            except Exception as exc:
                raise CheckpointError(shard, f"safetensors refused it: {exc}", _REEXPORT) from exc
        yield ShardReader(handles)
