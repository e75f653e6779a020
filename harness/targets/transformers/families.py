"""What the transformers target needs to know about a family beyond what its code declares, one record per family.

The oracle's facts (routing, block layout, what is not modelled) live in `reference/families.py`; these are the
target's own: config fields its MoE block needs to exist in a tiny model, the expert layout of an experts module
that declares none, and the legacy checkpoint layouts its load-time conversion claims to convert.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference.checkpoint import KeySchema


@dataclass(frozen=True)
class TransformersFamily:
    """One family's transformers-specific facts; `*_text` twins are `aliases`.

    `layout` is (transposed, concatenated gate/up) where the experts module carries no flags; `checkpoint_schemas`
    the layouts (NOTES §5) transformers' conversion mapping converts for it, plus the fused layout its model holds.
    A family with no `checkpoint_schemas` gets them derived from its own tiny model
    (`harness.targets.transformers.checkpoint.family_schemas`: its fused experts' prefix and block, their
    base-model spelling, the per-expert layout its conversion reverts to); a record is for what that misses.
    """

    name: str
    aliases: tuple[str, ...] = ()
    layout: tuple[bool, bool] | None = None
    checkpoint_schemas: tuple[KeySchema, ...] = ()


# Prefix "" is a base-model checkpoint.
_QWEN2_MOE_STYLE = tuple(KeySchema(prefix, "mlp", layout, "proj")
                         for prefix in ("model.", "") for layout in ("per_expert", "fused"))
# mixtral's mapping renames `.block_sparse_moe.` to `.mlp.` and merges w1/w3 and w2.
_MIXTRAL_STYLE = tuple(KeySchema(prefix, block, layout, "w")
                       for prefix in ("model.", "") for block in ("mlp", "block_sparse_moe")
                       for layout in ("per_expert", "fused"))

RECORDS: tuple[TransformersFamily, ...] = (
    TransformersFamily("llama4", ("llama4_text",), layout=(True, True)),
    TransformersFamily("qwen3_moe", checkpoint_schemas=_QWEN2_MOE_STYLE),
    TransformersFamily("olmoe", checkpoint_schemas=_QWEN2_MOE_STYLE),
    TransformersFamily("qwen2_moe", checkpoint_schemas=_QWEN2_MOE_STYLE),
    TransformersFamily("deepseek_v3", checkpoint_schemas=_QWEN2_MOE_STYLE),
    TransformersFamily("mixtral", checkpoint_schemas=_MIXTRAL_STYLE),
    TransformersFamily("minimax_m2", checkpoint_schemas=_MIXTRAL_STYLE),
)
_BY_NAME = {name: r for r in RECORDS for name in (r.name, *r.aliases)}


def record(family: str) -> TransformersFamily:
    """The family's record, or an empty one (nothing beyond what its code declares)."""
    return _BY_NAME.get(family) or TransformersFamily(family)
