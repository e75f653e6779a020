"""Resolve any MoE family's config, in any spelling and nesting, into one `MoESpec`.

A config is a transformers `PretrainedConfig`, or a plain mapping as read from `config.json`.
Every lookup goes through the spelling tables below, so an error can name what was tried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reference.families import FamilyFacts, facts_for, facts_named
from reference.variants import variant

# Every accepted spelling, in the order tried. NOTES §4.
TOP_K_SPELLINGS = (
    "num_experts_per_tok",
    "top_k_experts",
    "moe_top_k",
    "moe_topk",
    "moe_k",
    "num_experts_per_token",
)
NUM_EXPERTS_SPELLINGS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
EXPERT_WIDTH_SPELLINGS = (
    "moe_intermediate_size",
    "expert_intermediate_size",
    "expert_ffn_hidden_size",
    "ffn_hidden_size",
    "intermediate_size",
)
SHARED_COUNT_SPELLINGS = ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts")
SHARED_WIDTH_SPELLINGS = (
    "shared_expert_intermediate_size",
    "shared_intermediate_size",
    "moe_shared_expert_intermediate_size",
    "shared_experts_intermediate_size",
    "share_expert_dim",
)
HIDDEN_SPELLINGS = ("hidden_size", "d_model", "n_embd")
ACTIVATION_SPELLINGS = ("hidden_act", "hidden_activation", "activation_function", "ffn_act_fn", "mlp_hidden_act")
RENORM_SPELLINGS = ("norm_topk_prob", "moe_renormalize", "renormalize")
SCALING_SPELLINGS = ("routed_scaling_factor", "moe_routed_scaling_factor", "router_scaling_factor",
                     "route_scale", "moe_router_scaling_factor")
NUM_LAYERS_SPELLINGS = ("num_hidden_layers", "n_layers", "num_layers")
N_GROUP_SPELLINGS = ("n_group", "num_expert_group")

# Where MoE fields live when they are not at the top level, outermost first.
NESTING_PATHS = (
    "text_config",
    "ffn_config",
    "thinker_config.text_config",
    "talker_config.text_config",
    "language_config",
    "llm_config",
)

ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "relu2": "relu2",
}
# The config keys of the (gate, up) softcaps a `swiglu_softcap` activation reads (inkling2).
SOFTCAP_KEYS = ("mlp_gate_softcap", "mlp_up_softcap")


class ConfigError(ValueError):
    """A config that names an MoE but whose fields are missing or inconsistent."""


class UnsupportedConfig(ConfigError):
    """A config the reference cannot model (no routed experts, or an unknown routing)."""


@dataclass(frozen=True)
class RoutingKnobs:
    """The routing variant and every knob it reads (NOTES §2)."""

    variant: str
    top_k: int
    renormalize: bool = False
    scaling_factor: float = 1.0
    n_group: int | None = None
    topk_group: int | None = None
    group_score: str = "top2_sum"  # grouped variants: a group's score is its top-2 sum, or its max

    @property
    def selection_bias(self) -> bool:
        """Whether the variant's selection adds a per-expert bias (a fact of the variant, not a knob)."""
        return variant(self.variant).biased

    @property
    def per_expert_scale(self) -> bool:
        """Whether the variant's weights are multiplied by a per-expert scale (a fact of the variant)."""
        return variant(self.variant).per_expert_scale


@dataclass(frozen=True)
class MoESpec:
    """Everything the reference needs to build one family's MoE block."""

    family: str
    num_experts: int
    top_k: int
    hidden_size: int
    intermediate_size: int
    routing: RoutingKnobs
    activation: str = "silu"
    num_shared_experts: int = 0
    shared_intermediate_size: int | None = None
    shared_combine: str = "none"  # none | add | sigmoid_gate | parallel_dense
    num_layers: int = 1
    moe_layers: tuple[int, ...] = (0,)
    nesting: str = ""
    router_bias: bool = False
    expert_bias: bool = False  # gate_up_proj_bias [E, 2I] and down_proj_bias [E, H]
    weight_on_input: bool = False
    glu_alpha: float = 1.702  # swiglu_oai only
    glu_limit: float = 7.0  # swiglu_oai and swiglu_clamp only
    glu_softcaps: tuple[float, float] | None = None  # swiglu_softcap only: (gate, up) softcaps
    gated: bool = True  # False: experts (and shared experts) are down(act(up x)), with no gate projection
    post_norm_eps: float | None = None  # the block's output passes an RMSNorm with a weight [H] and this eps
    spellings: dict[str, str] = field(default_factory=dict, compare=False)


_MISSING = object()


def _get(cfg: Any, name: str) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, _MISSING)
    try:
        return getattr(cfg, name)
    except AttributeError:
        return _MISSING
    except Exception as exc:  # transformers' per-layer configs raise their own errors on access
        raise ConfigError(f"reading {name!r} from {type(cfg).__name__} raised {type(exc).__name__}: {exc}") from exc


def _sub(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = _get(cfg, part)
        if cfg is _MISSING or cfg is None:
            return None
    return cfg


def find_moe_config(config: Any) -> tuple[Any, str]:
    """Return the (sub-)config that holds the routed-expert fields and its nesting path."""
    candidates = [(config, "")] + [(_sub(config, p), p) for p in NESTING_PATHS]
    for cfg, path in candidates:
        if cfg is None:
            continue
        if any(_get(cfg, n) not in (_MISSING, None) for n in NUM_EXPERTS_SPELLINGS + TOP_K_SPELLINGS):
            return cfg, path
    raise UnsupportedConfig(
        f"no routed-expert field in {_describe(config)}: tried {', '.join(NUM_EXPERTS_SPELLINGS + TOP_K_SPELLINGS)}"
        f" at the top level and under {', '.join(NESTING_PATHS)}"
    )


def _describe(cfg: Any) -> str:
    if isinstance(cfg, Mapping):
        return f"config mapping (model_type={cfg.get('model_type')!r})"
    return f"{type(cfg).__name__} (model_type={getattr(cfg, 'model_type', None)!r})"


def first_spelling(cfg: Any, spellings: tuple[str, ...]) -> tuple[str, Any] | None:
    """The first spelling present with a non-None value, as (name, value), or None."""
    for name in spellings:
        value = _get(cfg, name)
        if value is not _MISSING and value is not None:
            return name, value
    return None


def _require_int(cfg: Any, spellings: tuple[str, ...], what: str, where: str) -> tuple[str, int]:
    hit = first_spelling(cfg, spellings)
    if hit is None:
        seen = {n: _get(cfg, n) for n in spellings if _get(cfg, n) is not _MISSING}
        raise ConfigError(
            f"{where}: no value for {what}; tried {', '.join(spellings)}"
            + (f"; saw {seen}" if seen else "; none present")
            + ". Set one of them to a positive integer."
        )
    name, value = hit
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {what} {name}={value!r} is not an integer")
    if value <= 0:
        raise ConfigError(f"{where}: {what} {name}={value} must be positive")
    return name, value


def resolve_top_k(config: Any) -> int:
    """The experts-per-token count under any spelling and nesting; ConfigError names every spelling."""
    cfg, path = find_moe_config(config)
    return _require_int(cfg, TOP_K_SPELLINGS, "experts per token", _where(config, path))[1]


def _where(config: Any, path: str) -> str:
    return _describe(config) + (f".{path}" if path else "")


def num_decoder_layers(config: Any) -> int:
    """The decoder layer count (dense and MoE layers), under any spelling and nesting; 1 where none is spelled."""
    cfg, _ = find_moe_config(config)
    hit = (_stored_spelling(cfg, NUM_LAYERS_SPELLINGS) or first_spelling(cfg, NUM_LAYERS_SPELLINGS)
           or first_spelling(config, NUM_LAYERS_SPELLINGS))
    return int(hit[1]) if hit else 1


def moe_layer_indices(config: Any) -> tuple[int, ...]:
    """The indices of the MoE layers, from the layer count and whichever dense-layer marker is set."""
    return _moe_layers(find_moe_config(config)[0], num_decoder_layers(config))


def _stored_spelling(cfg: Any, spellings: tuple[str, ...]) -> tuple[str, Any] | None:
    """The first spelling the config stores (not one its class computes): longcat_flash derives
    num_hidden_layers = 2 * num_layers (two attention sublayers per decoder layer) from the stored num_layers,
    and only the stored count is the number of decoder layers, each with its one MoE block."""
    stored = cfg if isinstance(cfg, Mapping) else vars(cfg)
    return first_spelling({n: stored[n] for n in spellings if n in stored}, spellings)


def _moe_layers(cfg: Any, num_layers: int) -> tuple[int, ...]:
    # Each family marks its dense layers differently; absent markers mean every layer is MoE.
    layers = list(range(num_layers))
    first_dense = _get(cfg, "first_k_dense_replace")
    if isinstance(first_dense, int):
        layers = [i for i in layers if i >= first_dense]
    mlp_only = _get(cfg, "mlp_only_layers")
    if isinstance(mlp_only, list | tuple):
        layers = [i for i in layers if i not in set(mlp_only)]
    step = _get(cfg, "decoder_sparse_step")
    if isinstance(step, int) and step > 1:
        layers = [i for i in layers if (i + 1) % step == 0]
    freq = _get(cfg, "moe_layer_freq")
    if isinstance(freq, list | tuple) and len(freq) == num_layers:
        layers = [i for i in layers if freq[i]]
    elif isinstance(freq, int) and freq > 1:
        layers = [i for i in layers if (i + 1) % freq == 0]
    if _get(cfg, "enable_moe_block") is False or _get(cfg, "is_moe") is False:  # gemma4, doge: MoE switched off
        layers = []
    return tuple(i for i in layers if _listed_moe(cfg, i))


# Per-layer kinds a family spells as strings: which of them hold routed experts.
_MOE_LAYER_KINDS = frozenset({"sparse", "moe", "hash_moe"})


def _listed_moe(cfg: Any, i: int) -> bool:
    """Whether layer `i` has routed experts by the markers that name layers one by one: a per-layer kind list
    (`mlp_layer_types`, nemotron-h's `layers_block_type`), a list of MoE layer ids (llama4's `moe_layers`), a
    leading dense count (`num_dense_layers`), a period and offset (jamba's `expert_layer_period`/`_offset`),
    a start, end and interval (ernie 4.5's `moe_layer_start_index`/`_end_index`/`_interval`)."""
    for name in ("mlp_layer_types", "layers_block_type"):
        kinds = _get(cfg, name)
        if not (isinstance(kinds, list | tuple) and i < len(kinds) and all(isinstance(k, str) for k in kinds)):
            continue
        # jamba's `layers_block_type` names attention and mamba mixers only: it says nothing of experts
        names_experts = name == "mlp_layer_types" or bool(_MOE_LAYER_KINDS & set(kinds))
        if names_experts and kinds[i] not in _MOE_LAYER_KINDS:
            return False
    ids, dense = _get(cfg, "moe_layers"), _get(cfg, "num_dense_layers")
    if (isinstance(ids, list | tuple) and i not in ids) or (isinstance(dense, int) and i < dense):
        return False
    period, offset = _get(cfg, "expert_layer_period"), _get(cfg, "expert_layer_offset")
    if isinstance(period, int) and isinstance(offset, int) and period > 0 and i % period != offset:
        return False
    start, end, interval = (_get(cfg, f"moe_layer_{n}") for n in ("start_index", "end_index", "interval"))
    if isinstance(start, int) and isinstance(end, int) and isinstance(interval, int) and interval > 0:
        return start <= i <= end and (i + 1) % interval == 0
    return True


def _inferred_variant(cfg: Any) -> str:
    """The variant a config's own knobs name, for a family whose code does not fix one."""
    n_group_hit = first_spelling(cfg, N_GROUP_SPELLINGS)
    n_group, topk_group = (n_group_hit[1] if n_group_hit else None), _get(cfg, "topk_group")
    selection_fn = _get(cfg, "expert_selection_fn")  # cohere2_moe: softmax or sigmoid over the top-K logits
    if _get(cfg, "topk_method") in ("greedy", "group_limited_greedy"):
        # DeepSeek-V2: softmax scores, groups scored by their max (greedy keeps every group), and the
        # picks renormalised when the config's norm_topk_prob says so (its released configs say False).
        return "grouped_softmax"
    if selection_fn in ("softmax", "sigmoid"):
        return "topk_softmax" if selection_fn == "softmax" else "sigmoid_topk_on_logits"
    if isinstance(n_group, int) and n_group >= 1 and isinstance(topk_group, int):
        # One group is still the grouped code path (sigmoid scores, the selection bias, the scaling factor):
        # DeepSeek-V3-style blocks do not special-case n_group=1.
        return "grouped"
    return "sigmoid_bias" if _get(cfg, "scoring_func") == "sigmoid" else "softmax_topk"


def _groups(cfg: Any, name: str, inferred: bool) -> tuple[Any, Any, str]:
    """(n_group, topk_group, group score) as the variant reads them; (None, None, ...) where it routes ungrouped.
    Only a variant inferred from DeepSeek-V2's `topk_method` scores groups by their max (greedy: no groups)."""
    n_group_hit = first_spelling(cfg, N_GROUP_SPELLINGS)
    n_group, topk_group = (n_group_hit[1] if n_group_hit else None), _get(cfg, "topk_group")
    method = _get(cfg, "topk_method") if inferred else None
    group_score = "max" if method in ("greedy", "group_limited_greedy") else "top2_sum"
    ungrouped = not variant(name).grouped or method == "greedy" or (
        variant(name).groups_optional and not (isinstance(n_group, int) and isinstance(topk_group, int)))
    return (None, None, group_score) if ungrouped else (n_group, topk_group, group_score)


def _check_groups(knobs: RoutingKnobs, num_experts: int, where: str) -> None:
    """ConfigError unless the groups divide the experts, keep 1..n_group of them, and hold the top-K."""
    n_group, topk_group = knobs.n_group, knobs.topk_group
    if n_group is None or topk_group is None:
        return
    if num_experts % n_group:
        raise ConfigError(f"{where}: n_group={n_group} does not divide num_experts={num_experts}")
    if not 0 < topk_group <= n_group:
        raise ConfigError(f"{where}: topk_group={topk_group} must lie in 1..n_group={n_group}")
    if knobs.top_k > topk_group * (num_experts // n_group):
        raise ConfigError(
            f"{where}: top_k={knobs.top_k} exceeds the experts in the kept groups "
            f"({topk_group} groups × {num_experts // n_group})"
        )


def _routing(cfg: Any, facts: FamilyFacts | None, top_k: int, num_experts: int, where: str) -> RoutingKnobs:
    softcap = _get(cfg, "moe_router_logit_softcapping")
    if isinstance(softcap, int | float) and softcap > 0:
        raise UnsupportedConfig(f"{where}: router logits softcapped (moe_router_logit_softcapping={softcap}) "
                                "are not modelled")
    renorm_hit = first_spelling(cfg, RENORM_SPELLINGS)
    renorm = bool(renorm_hit[1]) if renorm_hit else False
    inferred = facts is None or facts.routing is None
    name = _inferred_variant(cfg) if facts is None or facts.routing is None else facts.routing
    if facts is not None and facts.renormalize is not None and not inferred:
        renorm = facts.renormalize
    scale_hit = first_spelling(cfg, SCALING_SPELLINGS)
    n_group, topk_group, group_score = _groups(cfg, name, inferred)
    knobs = RoutingKnobs(variant=name, top_k=top_k, renormalize=renorm,
                         scaling_factor=float(scale_hit[1]) if scale_hit and variant(name).scaled else 1.0,
                         n_group=n_group, topk_group=topk_group, group_score=group_score)
    _check_groups(knobs, num_experts, where)
    return knobs


def _require_float(cfg: Any, spellings: tuple[str, ...], what: str, where: str) -> tuple[str, float]:
    """The first spelling of `what` present, as a positive float; ConfigError names the spellings tried."""
    hit = first_spelling(cfg, spellings)
    if hit is None:
        raise ConfigError(f"{where}: no value for {what}; tried {', '.join(spellings)}")
    name, value = hit
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: {what} {name}={value!r} is not a positive number")
    return name, float(value)


def _softcaps(cfg: Any, where: str) -> tuple[float, float]:
    """The (gate, up) softcaps of a `swiglu_softcap` activation, from SOFTCAP_KEYS."""
    gate = _require_float(cfg, SOFTCAP_KEYS[:1], "gate softcap", where)[1]
    up = _require_float(cfg, SOFTCAP_KEYS[1:], "up softcap", where)[1]
    return gate, up


def _check_no_per_layer_clamps(cfg: Any, moe_layers: tuple[int, ...], where: str) -> None:
    """UnsupportedConfig when a per-layer SwiGLU clamp list (step3p7's `swiglu_limits`, `swiglu_limits_shared`:
    a 0 or None entry means no clamp) clamps an MoE layer: one activation for every layer is modelled."""
    for key in ("swiglu_limits", "swiglu_limits_shared"):
        limits = _get(cfg, key)
        if not isinstance(limits, list | tuple):
            continue
        clamped = [i for i in moe_layers if i < len(limits) and limits[i]]
        if clamped:
            raise UnsupportedConfig(f"{where}: {key} clamps the SwiGLU of MoE layers {clamped}; "
                                    "per-layer clamps are not modelled")


def _expert_fields(config: Any, cfg: Any, facts: FamilyFacts | None, where: str) -> dict[str, Any]:
    """The MoESpec fields of the expert MLPs: activation (the record's, else the config's), its SwiGLU constants,
    gatedness, and the post-block norm's eps; UnsupportedConfig for an activation the reference lacks."""
    act_hit = first_spelling(cfg, ACTIVATION_SPELLINGS) or first_spelling(config, ACTIVATION_SPELLINGS)
    act_value = act_hit[1] if act_hit else "silu"
    # dbrx spells it as a mapping: {"name": "silu"}
    act_name = str(act_value.get("name") if isinstance(act_value, Mapping) else act_value)
    if act_name not in ACTIVATIONS:
        raise UnsupportedConfig(f"{where}: activation {act_name!r} is not one of {sorted(ACTIVATIONS)}")
    fields: dict[str, Any] = {"activation": (facts and facts.activation) or ACTIVATIONS[act_name],
                              "gated": facts is None or facts.gated}
    fields |= {name: float(v) for name, key in (("glu_alpha", "swiglu_alpha"), ("glu_limit", "swiglu_limit"))
               if (v := _get(cfg, key)) not in (_MISSING, None)}
    if fields["activation"] == "swiglu_softcap":
        fields["glu_softcaps"] = _softcaps(cfg, where)
    if facts is not None and facts.post_norm:
        fields["post_norm_eps"] = _require_float(cfg, ("rms_norm_eps",), "post-block norm eps", where)[1]
    return fields


def resolve_moe_spec(config: Any) -> MoESpec:
    """Resolve a config into an `MoESpec`, or raise ConfigError/UnsupportedConfig naming what was tried.

    Guarantees: 0 < top_k <= num_experts; widths positive; the routing variant is one of ROUTING_VARIANTS.
    """
    cfg, path = find_moe_config(config)
    where = _where(config, path)
    family = str(_get(config, "model_type") if _get(config, "model_type") is not _MISSING else "")
    sub_family = _get(cfg, "model_type")
    if family in ("", "None") and sub_family not in (_MISSING, None):
        family = str(sub_family)
    # A nested text config of a known family carries the family's own routing.
    top = facts_named(family)
    described = family if top is not None and top.routing else str(sub_family) if sub_family is not _MISSING else family
    facts = facts_for(config, described)

    spellings: dict[str, str] = {}
    name, num_experts = _require_int(cfg, NUM_EXPERTS_SPELLINGS, "routed experts", where)
    spellings["num_experts"] = name
    name, top_k = _require_int(cfg, TOP_K_SPELLINGS, "experts per token", where)
    spellings["top_k"] = name
    if top_k > num_experts:
        raise ConfigError(f"{where}: experts per token {spellings['top_k']}={top_k} exceeds routed experts "
                          f"{spellings['num_experts']}={num_experts}")
    hidden_cfg = cfg if first_spelling(cfg, HIDDEN_SPELLINGS) else config
    name, hidden = _require_int(hidden_cfg, HIDDEN_SPELLINGS, "hidden size", where)
    spellings["hidden_size"] = name
    name, width = _require_int(cfg, EXPERT_WIDTH_SPELLINGS, "expert intermediate size", where)
    spellings["intermediate_size"] = name

    n_shared = 0
    shared_hit = first_spelling(cfg, SHARED_COUNT_SPELLINGS)
    if shared_hit:
        spellings["num_shared_experts"] = shared_hit[0]
        n_shared = int(shared_hit[1])
    shared_width_hit = first_spelling(cfg, SHARED_WIDTH_SPELLINGS)
    shared_width = None
    if shared_width_hit and int(shared_width_hit[1]) > 0:
        spellings["shared_intermediate_size"] = shared_width_hit[0]
        shared_width = int(shared_width_hit[1])
        n_shared = max(n_shared, 1)
    elif n_shared > 0:
        shared_width = width * n_shared
    shared_fact = facts.shared if facts else None
    combine = "none"
    if n_shared > 0:
        combine = "sigmoid_gate" if shared_fact == "sigmoid_gate" else "add"
    if shared_fact == "parallel_dense":
        combine, n_shared = "parallel_dense", 1
        shared_width = int(_get(cfg, "intermediate_size"))

    expert_fields = _expert_fields(config, cfg, facts, where)

    layers_hit = first_spelling(cfg, NUM_LAYERS_SPELLINGS) or first_spelling(config, NUM_LAYERS_SPELLINGS)
    num_layers = int(layers_hit[1]) if layers_hit else 1

    if shared_fact == "always_one":
        combine, n_shared, shared_width = "add", 1, width
    moe_layers = _moe_layers(cfg, num_layers)
    _check_no_per_layer_clamps(cfg, moe_layers, where)

    return MoESpec(
        family=family,
        num_experts=num_experts,
        top_k=top_k,
        hidden_size=hidden,
        intermediate_size=width,
        routing=_routing(cfg, facts, top_k, num_experts, where),
        num_shared_experts=n_shared,
        shared_intermediate_size=shared_width,
        shared_combine=combine,
        num_layers=num_layers,
        moe_layers=moe_layers,
        nesting=path,
        router_bias=bool(facts and facts.router_bias),
        expert_bias=bool(facts and facts.expert_bias),
        weight_on_input=bool(facts and facts.weight_on_input),
        **expert_fields,
        spellings=spellings,
    )
