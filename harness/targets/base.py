"""A target: the implementation under test, exposing optional capabilities the checks ask for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.findings import Finding
from reference.checkpoint import KeySchema
from reference.config import MoESpec
from reference.variants import GROUP_SCORES

RoutingFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RoutingCap:
    """fn(logits [T,E], knobs, *, bias, per_expert_scale) -> (weights [T,K], ids [T,K]) for `variants`;
    `group_scores`: how it may score a group where a variant lets the model choose (grouped_softmax);
    `renormalize`: the values its renormalize knob takes where a variant reads one (a function without that knob
    gives the one it computes). An engine whose models hand their own routing functions to its routers gives
    `for_family(family)`, the RoutingCap serving that family's model (this one then serves the others), and the
    families it has (`runs_over`, applied where the run names the target or check)."""

    fn: RoutingFn
    variants: tuple[str, ...]
    group_scores: tuple[str, ...] = GROUP_SCORES
    renormalize: tuple[bool, ...] = (False, True)
    for_family: Callable[[str], RoutingCap | None] | None = None
    runs_over: tuple[str, ...] | None = None

    def of(self, family: str) -> RoutingCap:
        """The routing that serves `family`'s model."""
        own = self.for_family(family) if self.for_family is not None else None
        return own if own is not None else self


@dataclass(frozen=True)
class RemapCap:
    """A checkpoint-key remap: the schemas it claims to accept and the names it must produce. An engine with one remap
    per model class gives `for_family(family)`, the RemapCap of the class serving that family's checkpoints (this
    one is then the default family's), `skip(family)` why a family has none, and the families it has (`runs_over`,
    applied where the run names the target or check)."""

    fn: Callable[[str], str]
    accepts: tuple[KeySchema, ...]
    produces: KeySchema
    for_family: Callable[[str], RemapCap] | None = None
    skip: Callable[[str], str | None] | None = None
    runs_over: tuple[str, ...] | None = None

    def of(self, family: str) -> RemapCap:
        """The remap that serves `family`'s checkpoints."""
        return self.for_family(family) if self.for_family is not None else self


@dataclass(frozen=True)
class ExpertMappingCap:
    """Expert params mapping entry points; each returns rows (param, ckpt_key, expert_id, shard_id).

    Both take (ckpt_gate_proj_name, ckpt_down_proj_name, ckpt_up_proj_name, num_experts,
    num_redundant_experts) positionally or by keyword (`redundant=False`: an engine without redundant experts, whose
    entry points take the first four only); `old` is the entry point `new` replaces.
    `fused_params` names the engine's fused (gate+up, down) parameters and `shard_ids` its shard ids for the
    (gate, up, down) projections, both as its rows spell them (vLLM's by default): a gate or up row's param
    must contain the first fused name, a down row's the second. Neither name may contain the other, and the
    shard ids are distinct, so a row names one slot only.
    """

    new: Callable[..., list[Any]]
    old: Callable[..., list[Any]] | None = None
    fused_params: tuple[str, str] = ("w13", "w2")
    shard_ids: tuple[str, str, str] = ("w1", "w3", "w2")
    redundant: bool = True

    def __post_init__(self) -> None:
        gate_up, down = self.fused_params
        if not gate_up or not down or gate_up in down or down in gate_up:
            raise ValueError(f"ExpertMappingCap.fused_params={self.fused_params!r}: give two non-empty names, "
                             "neither containing the other (a row's param is matched by the name it contains)")
        if len(set(self.shard_ids)) != 3:
            raise ValueError(f"ExpertMappingCap.shard_ids={self.shard_ids!r}: give three distinct ids, "
                             "for the gate, up and down projections")


@dataclass(frozen=True)
class BlockCap:
    """build(spec, seed, dtype) -> an nn.Module mapping x [T, H] to [T, H]; `families` it can build."""

    build: Callable[..., torch.nn.Module]
    families: tuple[str, ...] | None = None  # None: any family the reference can build
    # skip(family) -> why this target has no block for that family, or None (checked before a case runs).
    skip: Callable[[str], str | None] | None = None
    # What its experts compute in: block-parity judges a narrower dtype against the size of the terms summed.
    compute_dtype: torch.dtype = torch.float32
    # Float buffers that by design never reach the output (a training statistic), each with why: functional-call
    # holds them to changing nothing instead of to changing the output.
    inert: dict[str, str] = field(default_factory=dict)
    # The families its cases run over where the run names the target or the check (None: the target's own).
    runs_over: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DifferentialRun:
    """One checkpoint through two loaders: the engine's block output, transformers' (None where transformers raised:
    `transformers_error` says what), and what the checkpoint means: the tensors of the block of the model it was
    written from, under the reference's names."""

    engine: torch.Tensor
    transformers: torch.Tensor | None
    transformers_error: str | None
    written: dict[str, torch.Tensor]


@dataclass(frozen=True)
class DifferentialCap:
    """run(family, seed, x [T, H]) -> DifferentialRun: the family's checkpoint written (by transformers, from `seed`),
    loaded by the engine's own loader and by transformers' `from_pretrained`, the first MoE block of each model run on
    x; `skip(family)` why a family has no block in the engine's model, or None; `runs_over` its families (where the
    run names the target or check)."""

    run: Callable[[str, int, torch.Tensor], DifferentialRun]
    skip: Callable[[str], str | None] | None = None
    runs_over: tuple[str, ...] | None = None
    example_caps: tuple[tuple[str, int], ...] = (("dev", 2), ("ci", 3))


@dataclass(frozen=True)
class SwapCap:
    """swap(block, config) -> the engine's own MoE module built in place of a transformers MoE block, holding the
    block's weights as the engine converts them: x [T, H] -> [T, H]. `block` is a transformers target block
    (`harness.targets.transformers.blocks.RealMoEBlock`), `config` its family's text config. `compute_dtype` is
    what the engine's experts compute in (the output's tolerance follows it); `route(swapped, x)` the swapped
    module's routing (weights [T, K], ids [T, K]), judged at float32 where the engine routes in float32 whatever its
    experts compute in; `skip(family)` why a family has no swap."""

    swap: Callable[[Any, Any], torch.nn.Module]
    compute_dtype: torch.dtype = torch.float32
    route: Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    skip: Callable[[str], str | None] | None = None
    example_caps: tuple[tuple[str, int], ...] = (("dev", 5), ("ci", 10))


StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StateDictConverter:
    """One converter between Hugging Face checkpoints and an engine's state dict, as a training framework converts
    on import and export. `name` says which (and what it was built for); `state(seed)` a state dict on the `origin`
    side ("hf" or "engine") as the model holds it, every tensor distinct; `from_hf` / `to_hf` the two directions
    (each handed a copy, free to change it); `passes_through`: keys it has no rule for pass through unchanged (a
    remap over names), so what it produces is a fixed point of it."""

    name: str
    origin: str
    state: Callable[[int], StateDict]
    from_hf: Callable[[StateDict], StateDict]
    to_hf: Callable[[StateDict], StateDict]
    passes_through: bool = False

    def __post_init__(self) -> None:
        if self.origin not in ("hf", "engine"):
            raise ValueError(f"StateDictConverter.origin={self.origin!r}: give 'hf' or 'engine'")


@dataclass(frozen=True)
class ConverterCap:
    """converters(family) -> the family's state-dict converters (each one judged); `skip(family)` why a family has
    none, or None."""

    converters: Callable[[str], tuple[StateDictConverter, ...]]
    skip: Callable[[str], str | None] | None = None
    example_caps: tuple[tuple[str, int], ...] = (("dev", 2), ("ci", 3))


@dataclass(frozen=True)
class FusedMoECap:
    """fn(x [T,H], weights [T,K], ids [T,K], gate_up_proj [E,2I,H], down_proj [E,H,I], activation, **keywords) ->
    [T,H], the signature of `reference.moe.experts_forward`, for the `dtypes` and `activations` given. `facts`: the
    block facts it computes through that function's keywords, "expert_bias" (gate_up_bias [E,2I], down_bias [E,H])
    and "weight_on_input" (the routing weight applied to each pick's input); a clamped SwiGLU activation
    (swiglu_oai, swiglu_clamp) is handed glu_alpha and glu_limit."""

    fn: Callable[..., torch.Tensor]
    dtypes: tuple[torch.dtype, ...]
    activations: tuple[str, ...] = ("silu", "gelu", "gelu_tanh")
    facts: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointLoaderCap:
    """load(checkpoint_dir, spec) -> an object with `params` (reference-named tensors) and `report`
    (`loaded`, `missing`, `unexpected`, `conflicts`), like `reference.loader.LoadedCheckpoint`;
    `schemas(family)` the key schemas it claims to load for that family (empty: none), `formats` the
    checkpoint formats of `harness.strategies.checkpoint_files.FORMATS` it claims (None: all of them)."""

    load: Callable[[Path, MoESpec], Any]
    schemas: Callable[[str], tuple[KeySchema, ...]]
    formats: tuple[str, ...] | None = ("none",)


@dataclass(frozen=True)
class ModelRun:
    """What an engine computed from a checkpoint directory: `logits` [tokens, vocab] (float32) of the model its loader
    built from it; `reloaded`, the logits of the model it built from what it saved of that model, or `reload_error`,
    what that second load raised (both None: the engine saves nothing)."""

    logits: torch.Tensor
    reloaded: torch.Tensor | None = None
    reload_error: str | None = None


@dataclass(frozen=True)
class ModelLoaderCap:
    """run(directory, token_ids, form) -> ModelRun: the engine's own loader, strict, over a whole checkpoint directory
    as transformers writes it (config.json and safetensors), its config.json read in `form` (one of `forms`, each
    drawn: as written, or the layout of older published checkpoints the engine also reads), then its model run over
    the ids; `skip(family)` why a family cannot be judged, or None. `writes_checkpoint`: the engine is transformers,
    the checkpoint's writer, so its own model failing on the checkpoint is its failure, not a skip."""

    run: Callable[[Path, tuple[int, ...], str], ModelRun]
    forms: tuple[str, ...] = ("config.json",)
    writes_checkpoint: bool = False
    skip: Callable[[str], str | None] | None = None
    example_caps: tuple[tuple[str, int], ...] = (("dev", 2), ("ci", 2))


@dataclass(frozen=True)
class LoadedParams:
    """What one rank's weight loading put in the model: `params`, every parameter by name as the loader left it (before
    any after-loading processing); `experts`, for each parameter stacked over experts along dim 0, the global expert id
    each of its rows holds on this rank; `buffers`, every floating-point buffer (a loader may put a checkpoint tensor
    in one: a routing correction bias, say). What the engine does on purpose, each with its reason from the engine's
    code: `derived`, a parameter computed elementwise from a checkpoint key (name -> key); `reordered`, a parameter
    whose rows are a permutation of its slice (name -> why); `unused`, a checkpoint key its model never reads and does
    not load (key -> why); `zeroed`, a parameter this rank holds zeros in instead of its slice (name -> why: a bias
    another rank adds once for all, say). `expert_mapping`: the expert params mapping the engine declares for the model, if it does
    ((parameter name, checkpoint weight name, expert id, shard id) entries; vLLM's `get_expert_mapping()`)."""

    params: dict[str, torch.Tensor]
    experts: dict[str, tuple[int, ...]]
    rank: int = 0
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    reordered: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    expert_mapping: tuple[tuple[str, str, int, str], ...] = ()
    zeroed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightLoaderCap:
    """load(directory, sharding) -> one LoadedParams per rank: the engine builds the model of a checkpoint directory as
    it serves it (its config resolution, its model class) under `sharding` (each of `shardings` in turn: "single",
    "tp2", "ep2", ...), every parameter first filled with NaN, then runs its own weight loading over the directory's
    safetensors (float32). `fused_parts`: for a parameter whose name ends in one of these, the checkpoint modules its
    rows stack, in order (each part a tuple of the names a checkpoint spells it). `skip(family)`: why a family cannot
    be judged, or None."""

    load: Callable[[Path, str], tuple[LoadedParams, ...]]
    shardings: tuple[str, ...] = ("single",)
    fused_parts: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = ()
    skip: Callable[[str], str | None] | None = None
    example_caps: tuple[tuple[str, int], ...] = (("dev", 1), ("ci", 1))
    # The families its cases run over where the run names the target or the check (None, or a bare `moe-harness run`:
    # the target's): every family the engine may implement, not only the target's default few.
    runs_over: tuple[str, ...] | None = None
    # Write the checkpoint in a process of its own (harness/targets/transformers/writer.py): the engine's import
    # changes transformers' classes in this one.
    isolated_writer: bool = False


@dataclass(frozen=True)
class ConversionRules:
    """One family's checkpoint conversion as applied at load time, with the names it starts from and ends at.

    `rename(key)` is the key transformers loads `key` into; `own_names` the model's state_dict names (already
    converted); `base_names` maps each own name spelled as the base model saves it to that own name;
    `legacy_names` what `save_pretrained` writes (the reverse conversion); `groups` the own names by layer
    (one group for the names outside layers), each with its legacy spelling; `schemas` the grammar schemas
    (NOTES §5) with the family's prefixes and blocks; `merge(key)` the declared merge `key` enters as
    (merge id, slot within it), or None; `explain(key)` the rules that fire on `key`, in order.
    """

    rename: Callable[[str], str]
    own_names: tuple[str, ...]
    base_names: dict[str, str]
    legacy_names: tuple[str, ...]
    groups: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    schemas: tuple[KeySchema, ...]
    merge: Callable[[str], tuple[str, str] | None]
    explain: Callable[[str], list[str]]


@dataclass(frozen=True)
class ConversionCap:
    """rules(family) -> the family's ConversionRules; `skip(family)` says why a family has none, or None."""

    rules: Callable[[str], ConversionRules]
    skip: Callable[[str], str | None] | None = None


@dataclass(frozen=True)
class Spelling:
    """One name a family's config accepts for `quantity` ("num_experts" or "top_k"), in the sub-config at
    `path` ("" for the top level); `alias` when it is an `attribute_map` alias, not a field."""

    quantity: str
    name: str
    path: str = ""
    alias: bool = False

    def __str__(self) -> str:
        return (f"{self.path}.{self.name}" if self.path else self.name) + (" (alias)" if self.alias else "")


class ValuesRejected(ValueError):
    """The family's config rejects these values through its own constructor keyword too (a family limit,
    such as a top-k fixed to 1), so no spelling of them can be checked."""


@dataclass(frozen=True)
class ConfigSpellingCap:
    """spellings(family): the names its config accepts; used(family, form, ((spelling, value), ...)) ->
    {quantity: [(where, value), ...]}: what the model built from a config with each value set through its
    spelling in `form` (one of `forms`) uses, measured on the model (never read back from the config).
    `used` raises ValuesRejected when the values are invalid for the family whatever the spelling."""

    spellings: Callable[[str], tuple[Spelling, ...]]
    used: Callable[[str, str, tuple[tuple[Spelling, int], ...]], dict[str, list[tuple[str, int]]]]
    forms: tuple[str, ...] = ("constructor", "config.json", "setattr")
    skip: Callable[[str], str | None] | None = None


@dataclass(frozen=True)
class Knob:
    """A routing knob a family's config declares: `kind` is the reference knob it sets (renormalize,
    scaling_factor, n_group, topk_group, top_k), `name` the config field, `default` its value in the tiny config."""

    kind: str
    name: str
    default: Any


@dataclass(frozen=True)
class RouterRun:
    """A family's real router built from a config: route(x [T,H]) -> (weights [T,K], ids [T,K]), logits(x)
    -> [T,E], and the selection bias / per-expert scale tensors it holds (None when it has none)."""

    config: Any
    hidden_size: int
    route: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    logits: Callable[[torch.Tensor], torch.Tensor]
    bias: torch.Tensor | None = None
    per_expert_scale: torch.Tensor | None = None


@dataclass(frozen=True)
class RouterKnobsCap:
    """knobs(family): the routing knobs its config declares; build(family, ((name, value), ...), seed) ->
    the RouterRun of its real router built with those knob values (same seed: same router tensors)."""

    knobs: Callable[[str], tuple[Knob, ...]]
    build: Callable[[str, tuple[tuple[str, Any], ...], int], RouterRun]
    skip: Callable[[str], str | None] | None = None


@dataclass(frozen=True)
class ConfigField:
    """A field a family's MoE (sub-)config declares, as the config class itself describes it.

    `name` is the stored name (its `config.json` key) in the sub-config at `path` ("" for the top level); `kind`
    one of FIELD_KINDS; `default` its value in the tiny config; `choices` the values a `str` field, or each
    entry of a `layer_kinds` list, may take; `optional` when its annotation admits None; `layers` the layer
    count a per-layer list spans (0 for other kinds).
    """

    name: str
    kind: str
    default: Any = field(hash=False)  # may be a list
    choices: tuple[Any, ...] = ()
    optional: bool = False
    layers: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"{self.path}.{self.name}" if self.path else self.name


# bool, int, float: scalars; str: one of `choices`; layer_kinds: a per-layer list of `choices` (mlp_layer_types);
# layer_ids: a list of layer indices (mlp_only_layers); ints: a list of sizes (a per-modality width).
FIELD_KINDS = ("bool", "int", "float", "str", "layer_kinds", "layer_ids", "ints")


class ConfigRejected(ValueError):
    """The config class refused the values at construction; `error` is what its constructor raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


class VariantFailed(Exception):
    """A config the class accepted failed later: `stage` ("model build" or "forward") raised `error`."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage} raised {type(error).__name__}: {error}")
        self.stage, self.error = stage, error


@dataclass(frozen=True)
class ConfigVariantsCap:
    """fields(family): the MoE fields its config class declares; build_and_run(family, ((name, value), ...)) ->
    the float output of a forward on a few tokens through the model built from its tiny config with those
    values set on the MoE (sub-)config. Raises ConfigRejected when the config class refuses the values at
    construction, VariantFailed when the model build or the forward raises on a config it accepted."""

    fields: Callable[[str], tuple[ConfigField, ...]]
    build_and_run: Callable[[str, tuple[tuple[str, Any], ...]], torch.Tensor]
    skip: Callable[[str], str | None] | None = None


@dataclass
class Target:
    """One implementation under test. Capabilities are optional; a check skips a missing one."""

    name: str
    version: str
    description: str
    routing: RoutingCap | None = None
    remap: RemapCap | None = None
    expert_mapping: ExpertMappingCap | None = None
    # (config, max_tokens) -> buffer; a `layer_axis = "decoder"` attribute: indexed by every decoder layer, not the
    # MoE layers only (capturer-shape)
    capturer: Callable[[Any, int], torch.Tensor] | None = None
    block: BlockCap | None = None
    padded_runner: Callable[[Any, int], Callable[[torch.Tensor], torch.Tensor]] | None = None
    fused_moe: FusedMoECap | None = None
    checkpoint_loader: CheckpointLoaderCap | None = None
    conversion: ConversionCap | None = None
    config_spelling: ConfigSpellingCap | None = None
    router_knobs: RouterKnobsCap | None = None
    known_failures: list[Finding] = field(default_factory=list)
    # The families its cases run over when a check names none (None: DEFAULT_FAMILIES).
    families: tuple[str, ...] | None = None
    config_variants: ConfigVariantsCap | None = None
    swap: SwapCap | None = None
    converter: ConverterCap | None = None
    model_loader: ModelLoaderCap | None = None
    weight_loader: WeightLoaderCap | None = None
    differential: DifferentialCap | None = None
    # How it was loaded (a registered name or package.module:object), set by `load_target`: what a reproducer
    # and a stored record name, since the `name` alone does not load a user's adapter.
    spec: str = ""

    def capabilities(self) -> list[str]:
        """The capability fields this target fills, in declaration order."""
        return [n for n in CAPABILITIES if getattr(self, n) is not None]

    def known_failure(self, check: str, family: str, counterexample: dict | None = None) -> Finding | None:
        """The known failure recorded for check × family whose signature matches `counterexample` (a
        verdict's counterexample); with none (a passing verdict), the first one of check × family. A failure
        that no entry's signature matches is new, not known. An entry for every check ("*") is matched by
        failures only: a check that passes without reaching what it covers does not make it stale; so is an entry
        for every family, which a case passes where its draws did not reach the defect (its reproducer says when it
        is fixed)."""
        for kf in self.known_failures:
            if "*" in (kf.check, kf.family) and not counterexample:
                continue
            if kf.covers(check, family) and kf.matches(counterexample):
                return kf
        return None


# Every optional field of Target that a check may ask for; a new capability is a field plus its name here.
CAPABILITIES = ("routing", "remap", "expert_mapping", "capturer", "block", "padded_runner", "fused_moe",
                "checkpoint_loader", "conversion", "config_spelling", "router_knobs", "config_variants", "swap",
                "converter", "model_loader", "weight_loader", "differential")

