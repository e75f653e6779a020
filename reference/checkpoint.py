"""Checkpoint key schemas (NOTES §5), the remap to reference names, and the expert params mapping."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIXES = ("model.", "model.language_model.", "language_model.model.", "")
BLOCKS = ("mlp", "block_sparse_moe", "feed_forward", "moe", "")
PROJ_NAMES = {"proj": ("gate_proj", "up_proj", "down_proj"), "w": ("w1", "w3", "w2")}
SUFFIXES = (
    "weight", "bias", "weight_scale", "weight_scale_2", "input_scale", "weight_scale_inv",
    "qweight", "qzeros", "scales", "g_idx",
)
FUSED_NAMES = ("gate_up_proj", "down_proj")

# The reference's own names: per-expert keys, and the fused parameters they load into.
REFERENCE_PREFIX = "model."
REFERENCE_BLOCK = "moe"


@dataclass(frozen=True)
class KeySchema:
    """One way of spelling expert keys: `<prefix>layers.<L>.<block>.experts...<suffix>`."""

    prefix: str = "model."
    block: str = "mlp"
    layout: str = "per_expert"  # per_expert | fused
    names: str = "proj"  # proj (gate/up/down_proj) | w (w1/w3/w2)

    @property
    def id(self) -> str:
        return f"{self.prefix or '<none>'}|{self.block or '<none>'}|{self.layout}|{self.names}"

    def layer_root(self, layer: int) -> str:
        return f"{self.prefix}layers.{layer}." + (f"{self.block}." if self.block else "")

    def keys(self, num_layers: int, num_experts: int, suffixes: tuple[str, ...] = ("weight",)) -> list[str]:
        """Every expert key of a checkpoint in this schema, layer-major, expert-major, gate/up/down."""
        out: list[str] = []
        for layer in range(num_layers):
            root = self.layer_root(layer) + "experts."
            if self.layout == "fused":
                out += [root + name for name in FUSED_NAMES]
                continue
            for expert in range(num_experts):
                for proj in PROJ_NAMES[self.names]:
                    out += [f"{root}{expert}.{proj}.{suffix}" for suffix in suffixes]
        return out


REFERENCE_SCHEMA = KeySchema(prefix=REFERENCE_PREFIX, block=REFERENCE_BLOCK, layout="per_expert", names="proj")

_KEY = re.compile(
    r"^(?P<prefix>model\.language_model\.|language_model\.model\.|model\.)?"
    r"layers\.(?P<layer>\d+)\."
    r"(?:(?P<block>mlp|block_sparse_moe|feed_forward|moe)\.)?"
    r"experts\."
    r"(?:(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj|w1|w3|w2)\.(?P<suffix>\w+)"
    r"|(?P<fused>gate_up_proj|down_proj)(?:\.(?P<fsuffix>\w+))?)$"
)
_CANONICAL_PROJ = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def parse_expert_key(key: str) -> dict[str, str] | None:
    """The schema fields of an expert key, or None for a key that is not an expert weight."""
    m = _KEY.match(key)
    return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}


def remap(key: str) -> str:
    """Map an expert key in any supported schema to the reference name; other keys are returned as is.

    Idempotent by construction: the output is parsed by the same grammar and maps to itself.
    """
    parts = parse_expert_key(key)
    if parts is None:
        return key
    root = f"{REFERENCE_PREFIX}layers.{parts['layer']}.{REFERENCE_BLOCK}.experts."
    if "fused" in parts:
        return root + parts["fused"] + (f".{parts['fsuffix']}" if "fsuffix" in parts else "")
    proj = _CANONICAL_PROJ.get(parts["proj"], parts["proj"])
    return f"{root}{parts['expert']}.{proj}.{parts['suffix']}"


@dataclass(frozen=True)
class ExpertParamEntry:
    """One row of the expert params mapping: load `ckpt_key` into `param` at (expert_id, shard_id)."""

    param: str
    ckpt_key: str
    expert_id: int
    shard_id: str


SHARD_OF = {"gate": "w1", "up": "w3", "down": "w2"}


def make_expert_params_mapping(
    ckpt_gate_proj_name: str = "gate_proj",
    ckpt_down_proj_name: str = "down_proj",
    ckpt_up_proj_name: str = "up_proj",
    num_experts: int = 1,
    num_redundant_experts: int = 0,
) -> list[ExpertParamEntry]:
    """3·(E+R) entries: physical slot p loads logical expert p (p < E) or (p−E) mod E (redundant).

    w1 = gate and w3 = up load into the fused `experts.w13_` param, w2 = down into `experts.w2_`.
    """
    entries = []
    for physical in range(num_experts + num_redundant_experts):
        logical = physical if physical < num_experts else (physical - num_experts) % num_experts
        for shard, name in (("w1", ckpt_gate_proj_name), ("w2", ckpt_down_proj_name), ("w3", ckpt_up_proj_name)):
            param = "experts.w2_" if shard == "w2" else "experts.w13_"
            entries.append(ExpertParamEntry(param, f"experts.{logical}.{name}.", physical, shard))
    return entries
