"""MoE families as the checks see them: a name, its checkpoint key schema and scoped tolerance overrides
(OpInfo style), and the families the seed properties run over by default.

What the oracle knows about a family lives in `reference/families.py`; how its config is shrunk, in
`harness/tiny_configs.py`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from harness.tiny_configs import tiny_config
from harness.tolerances import Tolerance
from reference.checkpoint import KeySchema
from reference.config import MoESpec, resolve_moe_spec


@dataclass(frozen=True)
class Family:
    """One MoE family as the checks see it."""

    name: str
    schema: KeySchema = KeySchema()
    tolerances: dict[torch.dtype, Tolerance] = field(default_factory=dict)

    @property
    def spec(self) -> MoESpec:
        return tiny_spec(self.name)


@functools.cache
def tiny_spec(model_type: str) -> MoESpec:
    """The resolved spec of the family's tiny config (built once per process)."""
    return resolve_moe_spec(tiny_config(model_type))


# The families the seed properties run over by default: one or more per routing variant and
# shared-expert combination, each with the checkpoint key schema its released checkpoints use.
DEFAULT_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gemma4", KeySchema(prefix="model.language_model.", block="", layout="per_expert")),
        Family("mixtral", KeySchema(prefix="model.", block="block_sparse_moe", names="w")),
        Family("qwen2_moe", KeySchema(prefix="model.", block="mlp")),
        Family("qwen3_moe", KeySchema(prefix="model.", block="mlp")),
        Family("olmoe", KeySchema(prefix="model.", block="mlp")),
        Family("gpt_oss", KeySchema(prefix="model.", block="mlp", layout="fused")),
        Family("deepseek_v3", KeySchema(prefix="model.", block="mlp")),
        Family("minimax_m2", KeySchema(prefix="model.", block="block_sparse_moe", names="w")),
        Family("llama4_text", KeySchema(prefix="language_model.model.", block="feed_forward", layout="fused")),
    )
}


def get_family(name: str) -> Family:
    """The default record for `name`, or a plain record for any other discovered family."""
    return DEFAULT_FAMILIES.get(name) or Family(name)
