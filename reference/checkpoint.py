"""Checkpoint key schemas (NOTES §5), the remap to reference names, and the expert params mapping."""

from __future__ import annotations

import re
from dataclasses import dataclass

# `language_model.` is a multimodal base model's own spelling (its checkpoints' `model.language_model.` with the
# base-model prefix stripped); `ffn` is DeepSeek-V4's released block name.
PREFIXES = ("model.", "model.language_model.", "language_model.model.", "language_model.", "")
BLOCKS = ("mlp", "block_sparse_moe", "feed_forward", "moe", "ffn", "")
PROJ_NAMES = {"proj": ("gate_proj", "up_proj", "down_proj"), "w": ("w1", "w3", "w2")}
SUFFIXES = (
    "weight", "bias", "weight_scale", "weight_scale_2", "input_scale", "weight_scale_inv",
    "qweight", "qzeros", "scales", "g_idx",
)
FUSED_NAMES = ("gate_up_proj", "down_proj")

# The tensors real checkpoints hold beside the routed experts, which a remap or loader must leave alone (or route
# to their own place): the shared expert in either spelling (Qwen2-MoE's `shared_expert` with its sigmoid
# `shared_expert_gate`; DeepSeek's `shared_experts`), and groups of the layer's other tensors.
SHARED_SPELLINGS = ("shared_expert", "shared_experts")
NEIGHBOUR_KINDS = ("router", "router_bias", "norms", "attention", "dense_mlp")
_NEIGHBOURS: dict[str, tuple[tuple[str, str, str], ...]] = {  # kind -> (role, where, name); where: block | layer
    "router": (("router", "block", "gate.weight"),),
    "router_bias": (("router_bias", "block", "gate.e_score_correction_bias"),),
    "norms": (("input_layernorm", "layer", "input_layernorm.weight"),
              ("post_attention_layernorm", "layer", "post_attention_layernorm.weight")),
    "attention": tuple((f"{p}_proj", "layer", f"self_attn.{p}_proj.weight") for p in "qkvo"),
    "dense_mlp": tuple((f"dense_{p}", "layer", f"mlp.{p}.weight") for p in ("gate_proj", "up_proj", "down_proj")),
}
_ON_MOE_LAYERS = ("router", "router_bias")

# The reference's own names: per-expert keys, and the fused parameters they load into.
REFERENCE_PREFIX = "model."
REFERENCE_BLOCK = "moe"


@dataclass(frozen=True)
class KeySchema:
    """One way of spelling expert keys: `<prefix>layers.<L>.<block>.experts...<suffix>`.

    `transposed` (fused layout only) says the fused tensors are stored input-major, gate_up_proj [E, H, 2I] and
    down_proj [E, I, H], as Llama 4's and Aria's releases hold them; the key names are the same.
    """

    prefix: str = "model."
    block: str = "mlp"
    layout: str = "per_expert"  # per_expert | fused
    names: str = "proj"  # proj (gate/up/down_proj) | w (w1/w3/w2)
    transposed: bool = False

    @property
    def id(self) -> str:
        return f"{self.prefix or '<none>'}|{self.block or '<none>'}|{self.layout}|{self.names}" + (
            "|transposed" if self.transposed else "")

    def layer_base(self, layer: int) -> str:
        """Where the layer's own tensors sit (attention, norms): `<prefix>layers.<L>.`."""
        return f"{self.prefix}layers.{layer}."

    def layer_root(self, layer: int) -> str:
        """Where the layer's MoE block sits (router, experts, shared experts): `<prefix>layers.<L>.<block>.`."""
        return self.layer_base(layer) + (f"{self.block}." if self.block else "")

    def neighbour_keys(self, layer: int, moe: bool, shared: str = "", kinds: tuple[str, ...] = ()) -> dict[str, str]:
        """The non-expert keys of one layer (role -> key), in this schema's prefix and block: on a MoE layer the
        shared expert (`shared`: one of SHARED_SPELLINGS, "" for none) and, of `kinds` (NEIGHBOUR_KINDS), the
        router and its selection bias; norms and attention on every layer; the dense MLP on a layer that is not
        MoE (`moe` False). Layer -1 is the model's final norm (with `norms`)."""
        if layer < 0:
            return {"final_norm": f"{self.prefix}norm.weight"} if "norms" in kinds else {}
        root, base = self.layer_root(layer), self.layer_base(layer)
        out: dict[str, str] = {}
        if moe and shared:
            out.update({f"shared_{p}": f"{root}{shared}.{p}.weight" for p in PROJ_NAMES["proj"]})
            if shared == "shared_expert":
                out["shared_gate"] = f"{root}shared_expert_gate.weight"
        for kind in kinds:
            if kind in _ON_MOE_LAYERS and not moe or kind == "dense_mlp" and moe:
                continue
            for role, where, name in _NEIGHBOURS[kind]:
                out[role] = (root if where == "block" else base) + name
        return out

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
    r"^(?P<prefix>model\.language_model\.|language_model\.model\.|language_model\.|model\.)?"
    r"layers\.(?P<layer>\d+)\."
    r"(?:(?P<block>mlp|block_sparse_moe|feed_forward|moe|ffn)\.)?"
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
