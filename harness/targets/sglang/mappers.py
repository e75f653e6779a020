"""SGLang's checkpoint-name mappers as `RemapCap`s, where a model applies its `hf_to_sglang_mapper` to the checkpoint's
keys (in its `load_weights`, before its own renaming): the granite MoE models (`GraniteMoeForCausalLM` and the classes
built on it), whose mapper renames the legacy expert and router names (`input_linear`, `output_linear`,
`router.layer`) to the fused `experts.gate_up_proj` / `experts.down_proj` and `gate.weight`.

What a mapper accepts is the family's checkpoint schema as transformers writes it (fused experts); what it must produce
is written here from SGLang's loader (the names its expert split reads), never derived from the mapper under test. The
legacy names are no KeySchema's spelling: only the current ones are drawn. Every other model's mapper, where one is
set, renames the quantization config's layer lists only (`DefaultModelLoader` hands it to
`quant_config.apply_weight_name_mapper`); those models rename keys inside `load_weights`, which load-parity judges.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from harness.targets.base import RemapCap
from harness.verdict import not_applicable
from reference.checkpoint import KeySchema

DROPPED = "<dropped by the mapper>"
GRANITE = KeySchema(prefix="model.", block="block_sparse_moe", layout="fused")
# The model class serving each family, whose load_weights applies its mapper to the keys, and its experts' schema.
MAPPED: dict[str, tuple[str, KeySchema]] = {
    "granitemoe": ("granitemoe.GraniteMoeForCausalLM", GRANITE),
    "granitemoeshared": ("granitemoe.GraniteMoeSharedForCausalLM", GRANITE),
    "granitemoe_swa": ("granitemoe.GraniteMoeSWAForCausalLM", GRANITE),
}


def _mapper(path: str) -> Any:
    module, cls = path.rsplit(".", 1)
    return getattr(importlib.import_module(f"sglang.srt.models.{module}"), cls).hf_to_sglang_mapper


@functools.cache
def remap_cap(family: str) -> RemapCap:
    """The RemapCap of the SGLang model class serving `family`'s checkpoints."""
    path, schema = MAPPED[family]
    mapper = _mapper(path)

    def remap(key: str) -> str:
        name = mapper._map_name(key)  # what `WeightsMapper.apply` yields for one key (None: dropped)
        return f"{DROPPED} {key}" if name is None else name

    remap.__doc__ = f"SGLang's {path}.hf_to_sglang_mapper"
    return RemapCap(remap, (schema,), schema)


def skip_reason(family: str) -> str | None:
    """Why SGLang applies no checkpoint-name mapper to `family`'s keys, or None."""
    if family in MAPPED:
        return None
    return not_applicable(f"SGLang's model for {family} applies no name mapper to checkpoint keys (a model's "
                          "hf_to_sglang_mapper, where set, renames its quantization config's layer lists; its "
                          "load_weights renames keys itself, which load-parity judges)")
