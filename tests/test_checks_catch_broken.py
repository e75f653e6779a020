"""Each check fails on a broken implementation other than the seed one (a property that cannot fail is no property)."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
import torch

from harness.assertions import assert_close, assert_close_to_terms, assert_valid_selection
from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import Family, get_family
from harness.targets.base import (
    BlockCap,
    ConverterCap,
    DifferentialCap,
    DifferentialRun,
    ExpertMappingCap,
    FusedMoECap,
    ModelLoaderCap,
    ModelRun,
    RoutingCap,
    StateDictConverter,
    SwapCap,
    Target,
)
from harness.targets.reference import make_target
from harness.tolerances import Tolerance
from harness.verdict import ErrorKind, PropertyViolation, Status
from reference.checkpoint import make_expert_params_mapping, remap
from reference.loader import load_checkpoint
from reference.moe import MoEBlock, PaddedMoERunner, build_block, experts_forward, init_block, pad_to
from reference.routing import route
from tests.broken_targets import assumes_every_layer_sparse, conversion_with, transformers_with


def _broken(**caps) -> Target:
    return dataclasses.replace(make_target(), name="broken", known_failures=[], **caps)


def _route_int64(logits, knobs, **kw):
    w, ids = route(logits, knobs, **kw)
    return w, ids.long()


def _route_without_bias(logits, knobs, bias=None, **kw):
    return route(logits, knobs, bias=torch.zeros_like(bias) if bias is not None else None, **kw)


def _route_scaling_logits_in_place(logits, knobs, **kw):
    """Sharpens the router's input in place before routing: its weights then match the changed logits only."""
    return route(logits.mul_(3.0), knobs, **kw)


def _remap_drops_scale_suffix(key: str) -> str:
    """Folds quantization scales onto `.weight`: two checkpoint keys land on one name."""
    return re.sub(r"\.(weight_scale\w*|input_scale|scales)$", ".weight", remap(key))


def _remap_renames_gate_as_up(key: str) -> str:
    """Confuses w1 and w3 while renaming, leaving names already in target form alone: idempotent, and the
    right set of names, but each gate key lands on its up parameter and back."""
    once = remap(key)
    swap = {"gate_proj": "up_proj", "up_proj": "gate_proj"}
    return once if once == key else re.sub(r"\.(gate_proj|up_proj)\.", lambda m: f".{swap[m.group(1)]}.", once)


def _remap_swaps_gate_up(key: str) -> str:
    """Confuses w1 and w3 (gate and up): every fused gate_up parameter holds its halves swapped."""
    swap = {"gate_proj": "up_proj", "up_proj": "gate_proj"}
    return re.sub(r"\.(gate_proj|up_proj)\.", lambda m: f".{swap[m.group(1)]}.", remap(key))


def _experts_erf_gelu(x, weights, ids, gate_up_proj, down_proj, activation):
    """Gemma4's real bug: the erf gelu where the family asks for the tanh one."""
    act = "gelu" if activation == "gelu_tanh" else activation
    return experts_forward(x, weights, ids, gate_up_proj, down_proj, act)


def _mapping_redundant_to_zero(*args, **kwargs):
    rows = make_expert_params_mapping(*args, **kwargs)
    e = kwargs.get("num_experts", args[3] if len(args) > 3 else 1)
    return [dataclasses.replace(r, ckpt_key=re.sub(r"experts\.\d+\.", "experts.0.", r.ckpt_key))
            if r.expert_id >= e else r for r in rows]


def _capturer_swapped(config, max_tokens):
    from reference.capturer import RoutedExpertsCapturer

    return RoutedExpertsCapturer(config, max_tokens).buffer.transpose(1, 2)


class _FrozenGateBlock(MoEBlock):
    """Copies the gate weight at build time: substituting `gate.weight` never reaches routing."""

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "_frozen"):
            self._frozen = self.gate.weight.detach().clone()
        return torch.nn.functional.linear(x, self._frozen)


def _build_frozen(spec, seed=0, dtype=torch.float32):
    block = init_block(_FrozenGateBlock(spec, dtype), seed)
    block.router_logits(torch.zeros(1, spec.hidden_size, dtype=dtype))
    return block


class _AlwaysRenormBlock(MoEBlock):
    """Renormalises the top-K weights whatever the family's norm_topk_prob says (a knob ignored)."""

    def routing(self, logits: torch.Tensor, oracle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        weights, ids = super().routing(logits, oracle)
        return weights / weights.sum(-1, keepdim=True), ids


def _swap_always_renormalises(block, config):
    """An engine MoE built from the block's weights that renormalises the top-K weights whatever the config says
    (a norm flag the probe reads wrong)."""
    swapped = _AlwaysRenormBlock(get_family(block.family).spec)
    swapped.load_state_dict(block.reference_state())
    return swapped


class _ReadsItsStatistic(MoEBlock):
    """Adds a buffer declared inert (a training statistic) to its output: the declaration is wrong."""

    def __init__(self, spec, dtype=torch.float32):
        super().__init__(spec, dtype)
        self.register_buffer("tokens_seen", torch.zeros(spec.hidden_size, dtype=dtype), persistent=False)

    def forward(self, x, router_logits=None):
        return super().forward(x, router_logits) + self.tokens_seen


def _block_reading_statistic(spec, seed=0, dtype=torch.float32):
    return init_block(_ReadsItsStatistic(spec, dtype), seed)


def _block_holding_its_router_twice(spec, seed=0, dtype=torch.float32):
    """The reference block with its router registered a second time (as vLLM's MoE runner re-holds a block's
    modules): torch 2.13's functional_call restores such a module once, leaving the new value in it."""
    block = init_block(MoEBlock(spec, dtype), seed)
    block.router_again = block.gate
    return block


_AT = "model.layers.0.mlp."


def _block_state(seed: int) -> dict[str, torch.Tensor]:
    """deepseek_v3's reference block as a checkpoint holds it (its selection bias included), every tensor seeded."""
    return {_AT + k: v for k, v in build_block(get_family("deepseek_v3").spec, seed).state_dict().items()}


def _renamed(state, old: str, new: str):
    return {re.sub(old, new, k): v for k, v in state.items()}


def _converter(name: str, from_hf, to_hf, passes_through: bool = False) -> ConverterCap:
    return ConverterCap(lambda family: (StateDictConverter(name, "hf", _block_state, from_hf, to_hf, passes_through),))


# The router's weight renamed there and back: a correct converter (the control).
_TO_ENGINE, _TO_HF = (r"(?<!\.router)\.gate\.weight$", ".router.gate.weight"), (r"\.router\.gate\.weight$", ".gate.weight")
_CONVERTER_OK = _converter("renames the router", lambda sd: _renamed(sd, *_TO_ENGINE), lambda sd: _renamed(sd, *_TO_HF))
# Export forgets the selection bias: a trained tensor lost on the way back to HF.
_CONVERTER_DROPS_BIAS = _converter("export drops the bias", lambda sd: _renamed(sd, *_TO_ENGINE),
                                   lambda sd: {k: v for k, v in _renamed(sd, *_TO_HF).items() if "correction" not in k})
# A pass-through rule that also fires on its own output (gate.weight -> router.gate.weight -> router.router...).
_CONVERTER_REFIRES = _converter("rule re-fires", lambda sd: _renamed(sd, r"\.gate\.weight$", ".router.gate.weight"),
                                lambda sd: _renamed(sd, *_TO_HF), passes_through=True)


def _runner_trims_wrong_end(block, alignment):
    """Keeps the last `hidden` columns of the padded output instead of the first."""
    runner = PaddedMoERunner(block, alignment)

    def forward(x):
        hidden = x.shape[-1]
        routed = runner.routed_padded(x, block.router_logits(x), pad_to(hidden, alignment))[..., -hidden:]
        return block.shared(x) + routed

    return forward


def _transformers_cap(name: str, **changes):
    """The real transformers capability `name`, with `changes` (a broken wrapper around the real thing)."""
    return getattr(transformers_with(name, **changes), name)


def _json_loses_top_k(family, form, settings):
    """The real build, but a config.json top-k key never arrives (the class default is used instead)."""
    real = _transformers_cap("config_spelling")
    return real.used(family, form, tuple((s, v) for s, v in settings
                                         if not (form == "config.json" and s.quantity == "top_k")))


def _router_ignores_norm_topk_prob(family, overrides, seed):
    """The real router built without norm_topk_prob, handed back with the config that asked for it."""
    from harness.targets.transformers.knobs import build
    from harness.targets.transformers.spellings import with_moe_fields

    run = build(family, tuple((n, v) for n, v in overrides if n != "norm_topk_prob"), seed)
    return dataclasses.replace(run, config=with_moe_fields(family, dict(overrides)))


def _conversion_with_seed_002_rule():
    """qwen3_moe's real conversion rules plus seed 002's unanchored `\\.experts\\.` -> `.moe.experts.` rule."""
    from transformers.core_model_loading import WeightRenaming

    from harness.targets.transformers.conversion import family_conversion

    seed_rule = WeightRenaming(r"\.experts\.", ".moe.experts.")
    return conversion_with("qwen3_moe", _renamings=[*family_conversion("qwen3_moe")._renamings, seed_rule])


def _loads_with(after_load, after_reload=lambda model: None):
    """transformers' own whole-model loader (the transformers target's), with `after_load` applied to the model it
    loads and `after_reload` to the one it loads again from what it saved."""
    from harness.strategies.model_checkpoints import logits_of
    from harness.targets.transformers import saved_model

    def run(directory, ids, form):
        model = saved_model.load(directory)
        with torch.no_grad():
            after_load(model)
        model.save_pretrained(directory / "saved")
        again = saved_model.load(directory / "saved")
        with torch.no_grad():
            after_reload(again)
        return ModelRun(logits_of(model, ids), reloaded=logits_of(again, ids))

    return ModelLoaderCap(run)


def _swap_experts_0_and_1(model) -> None:
    """Stacks the experts out of order: expert 0's rows where expert 1's belong, in every fused expert tensor."""
    for name, param in model.named_parameters():
        if ".experts." in name and param.dim() == 3:
            param[[0, 1]] = param[[1, 0]].clone()


def _weights_loaded_with(corrupt):
    """transformers' own weight loading (the transformers target's load-parity capability), each rank's parameters
    then passed through `corrupt` (in place)."""
    from harness.targets.transformers import saved_model

    def load(directory, sharding):
        ranks = saved_model.loaded_weights(directory, sharding)
        for loaded in ranks:
            corrupt(loaded.params)
        return ranks

    return dataclasses.replace(saved_model.WEIGHT_LOADER, load=load)


def _stack_experts_out_of_order(params) -> None:
    """Expert 1's rows where expert 0's belong in every stacked experts parameter: no element lost, none twice."""
    for name, tensor in params.items():
        if ".experts." in name and tensor.dim() == 3:
            tensor[[0, 1]] = tensor[[1, 0]].clone()


def _stack_up_before_gate(params) -> None:
    """The fused gate_up_proj with its two halves the other way round."""
    for name, tensor in params.items():
        if name.endswith("experts.gate_up_proj"):
            tensor.copy_(torch.cat(tensor.chunk(2, dim=1)[::-1], dim=1))


def _norm_shift_reapplied(model) -> None:
    """A conversion that adds 1 to the norm weights (a zero-centred norm's checkpoint) applied again at the second
    load: the converted form is not a fixed point."""
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.add_(1.0)


def _differential_engine_swapping_experts(family: str, seed: int, x: torch.Tensor) -> DifferentialRun:
    """A checkpoint (the reference block's tensors) that transformers' side loads right and the engine's loads with
    experts 0 and 1 swapped."""
    spec = get_family(family).spec
    written = build_block(spec, seed).state_dict()
    right, swapped = MoEBlock(spec), MoEBlock(spec)
    right.load_state_dict(written)
    swapped.load_state_dict({n: t[[1, 0, *range(2, t.shape[0])]] if n.startswith("experts.") else t
                             for n, t in written.items()})
    with torch.no_grad():
        return DifferentialRun(swapped(x), right(x), None, written)


BROKEN = {
    "config-spelling/json-loses-top-k": ("config-spelling", "qwen3_moe",
                                         {"config_spelling": _transformers_cap("config_spelling",
                                                                               used=_json_loses_top_k)}),
    "router-knobs/ignores-norm-topk-prob": ("router-knobs", "qwen3_moe", {"router_knobs": _transformers_cap(
        "router_knobs", build=_router_ignores_norm_topk_prob)}),
    "conversion-remap/seed-002-rule": ("conversion-remap", "qwen3_moe", {"conversion": _conversion_with_seed_002_rule()}),
    "routing-parity/int64-ids": ("routing-parity", "mixtral", {"routing": RoutingCap(_route_int64, ("softmax_topk",))}),
    # Judged against the logits as they were before the call, not as the target left them.
    "routing-parity/scales-logits-in-place": ("routing-parity", "mixtral", {"routing": RoutingCap(
        _route_scaling_logits_in_place, ("softmax_topk",))}),
    "routing-parity/ignores-bias": ("routing-parity", "minimax_m2",
                                    {"routing": RoutingCap(_route_without_bias, ("sigmoid_bias",))}),
    "remap-idempotence/drops-scale-suffix": ("remap-idempotence", "mixtral",
                                      {"remap": dataclasses.replace(make_target().remap, fn=_remap_drops_scale_suffix)}),
    # The same names in another order: only a key-by-key comparison sees it.
    "remap-idempotence/renames-gate-as-up": ("remap-idempotence", "mixtral", {"remap": dataclasses.replace(
        make_target().remap, fn=_remap_renames_gate_as_up)}),
    "expert-mapping/redundant-to-zero": ("expert-mapping", "any",
                                         {"expert_mapping": ExpertMappingCap(new=_mapping_redundant_to_zero)}),
    "capturer-shape/swapped-dims": ("capturer-shape", "synthetic", {"capturer": _capturer_swapped}),
    "block-parity/ignores-norm-topk-prob": ("block-parity", "qwen3_moe", {"block": BlockCap(
        lambda spec, seed=0, dtype=torch.float32: init_block(_AlwaysRenormBlock(spec, dtype), seed))}),
    "functional-call/frozen-gate": ("functional-call", "mixtral", {"block": BlockCap(_build_frozen)}),
    "moe-output-parity/erf-gelu": ("moe-output-parity", "gemma4",
                                   {"fused_moe": FusedMoECap(_experts_erf_gelu, (torch.float32,))}),
    "checkpoint-roundtrip/gate-up-swapped": ("checkpoint-roundtrip", "mixtral", {"checkpoint_loader": dataclasses.replace(
        make_target().checkpoint_loader, load=functools.partial(load_checkpoint, remap_fn=_remap_swaps_gate_up))}),
    "config-accepted/assumes-every-layer-sparse": ("config-accepted", "qwen3_moe", {"config_variants": _transformers_cap(
        "config_variants", build_and_run=assumes_every_layer_sparse)}),
    "unpad-before-add/trims-wrong-end": ("unpad-before-add", "qwen2_moe", {"padded_runner": _runner_trims_wrong_end}),
    "swap-parity/always-renormalises": ("swap-parity", "qwen3_moe", {"swap": SwapCap(_swap_always_renormalises)}),
    "functional-call/inert-buffer-is-read": ("functional-call", "mixtral", {"block": BlockCap(
        _block_reading_statistic, inert={"tokens_seen": "a training statistic, never read"})}),
    "functional-call/module-registered-twice-keeps-the-new-value": ("functional-call", "mixtral", {
        "block": BlockCap(_block_holding_its_router_twice)}),
    # Judged at bf16 against the size of the terms: an ignored knob still shows.
    "block-parity/ignores-norm-topk-prob-in-bf16": ("block-parity", "qwen3_moe", {"block": BlockCap(
        lambda spec, seed=0, dtype=torch.float32: init_block(_AlwaysRenormBlock(spec, dtype), seed),
        compute_dtype=torch.bfloat16)}),
    "converter-roundtrip/export-drops-bias": ("converter-roundtrip", "deepseek_v3", {"converter": _CONVERTER_DROPS_BIAS}),
    "converter-roundtrip/rule-refires": ("converter-roundtrip", "deepseek_v3", {"converter": _CONVERTER_REFIRES}),
    "model-parity/experts-stacked-out-of-order": ("model-parity", "qwen3_moe", {"model_loader": _loads_with(
        _swap_experts_0_and_1)}),
    "model-parity/conversion-not-idempotent": ("model-parity", "qwen3_moe", {"model_loader": _loads_with(
        lambda model: None, _norm_shift_reapplied)}),
    "load-parity/experts-stacked-out-of-order": ("load-parity", "qwen3_moe", {"weight_loader": _weights_loaded_with(
        _stack_experts_out_of_order)}),
    "load-parity/up-stacked-before-gate": ("load-parity", "mixtral", {"weight_loader": _weights_loaded_with(
        _stack_up_before_gate)}),
    "differential/engine-loads-two-experts-swapped": ("differential", "mixtral", {"differential": DifferentialCap(
        _differential_engine_swapping_experts)}),
    # The router's weights never written: what a key the loader does not route leaves.
    "load-parity/parameter-left-unloaded": ("load-parity", "qwen3_moe", {"weight_loader": _weights_loaded_with(
        lambda params: [t.fill_(float("nan")) for n, t in params.items() if n.endswith("mlp.gate.weight")])}),
}


def test_swap_parity_holds_for_the_block_itself() -> None:
    """The control: the transformers block swapped for itself passes, so a failure above is the broken swap's."""
    verdict = run_case(CHECKS["swap-parity"], _broken(swap=SwapCap(lambda block, config: block)), get_family("qwen3_moe"))
    assert verdict.status == Status.PASS, verdict


def test_converter_roundtrip_holds_for_a_converter_that_renames_both_ways() -> None:
    """The control: renaming the router there and back, idempotent, passes; the failures above are the breakage's."""
    ok = dataclasses.replace(_CONVERTER_OK, converters=lambda family: tuple(
        dataclasses.replace(c, passes_through=True) for c in _CONVERTER_OK.converters(family)))
    verdict = run_case(CHECKS["converter-roundtrip"], _broken(converter=ok), get_family("deepseek_v3"))
    assert verdict.status == Status.PASS, verdict


def test_functional_call_holds_a_truly_inert_buffer_to_changing_nothing() -> None:
    """The control: a statistic buffer the forward never reads, declared inert, passes (and undeclared, fails)."""
    def build(spec, seed=0, dtype=torch.float32):
        block = init_block(MoEBlock(spec, dtype), seed)
        block.register_buffer("tokens_seen", torch.zeros(3, dtype=dtype), persistent=False)
        return block

    family = get_family("mixtral")
    declared = run_case(CHECKS["functional-call"], _broken(block=BlockCap(build, inert={"tokens_seen": "never read"})),
                        family, max_examples=3)
    assert declared.status == Status.PASS, declared
    undeclared = run_case(CHECKS["functional-call"], _broken(block=BlockCap(build)), family, max_examples=3)
    assert undeclared.status == Status.FAIL and "tokens_seen" in str(undeclared.counterexample), undeclared


def test_model_parity_holds_for_transformers_loading_its_own_checkpoint() -> None:
    """The control: transformers' own loader, untouched, passes; the failures above are the breakage's."""
    verdict = run_case(CHECKS["model-parity"], _broken(model_loader=_loads_with(lambda model: None)),
                       get_family("qwen3_moe"))
    assert verdict.status == Status.PASS, verdict


def test_load_parity_holds_for_transformers_own_weight_loading() -> None:
    """The control: from_pretrained's own loading (per-expert keys fused on load), untouched, passes."""
    verdict = run_case(CHECKS["load-parity"], _broken(weight_loader=_weights_loaded_with(lambda params: None)),
                       get_family("qwen3_moe"))
    assert verdict.status == Status.PASS, verdict


@pytest.mark.parametrize("name", BROKEN)
def test_check_catches_broken_implementation(name: str) -> None:
    check_name, family, caps = BROKEN[name]
    verdict = run_case(CHECKS[check_name], _broken(**caps), get_family(family) if family != "any" else Family("any"))
    assert verdict.status == Status.FAIL, f"{name} was not caught: {verdict}"
    assert verdict.kind == ErrorKind.PROPERTY_VIOLATION
    assert verdict.counterexample


def test_every_check_has_a_broken_implementation() -> None:
    assert {v[0] for v in BROKEN.values()} == set(CHECKS)


# ---- the assertion helpers fail when they should, in their one form ---------------------------------------


def test_assert_close_fails_beyond_the_tolerance_naming_it() -> None:
    tol = Tolerance(1e-3, 1e-5)
    assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0005]), tol, "w")  # within rtol
    with pytest.raises(PropertyViolation) as info:
        assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), tol, "weights")
    v = info.value
    assert v.message.startswith("weights: 1 of 2 elements differ beyond rtol=0.001, atol=1e-05")
    assert "observed 2, expected 2.5" in v.message and v.tolerance == str(tol)
    assert (v.details["where"], v.details["observed"], v.details["expected"], v.details["index"]) == \
        ("weights", 2.0, 2.5, (1,))
    with pytest.raises(PropertyViolation, match=r"shapes differ; observed \(2,\), expected \(3,\)"):
        assert_close(torch.zeros(2), torch.zeros(3), tol, "weights")


def test_assert_close_to_terms_allows_what_cancelled_and_fails_on_nan() -> None:
    tol = Tolerance(1e-2, 0.0)
    assert_close_to_terms(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([100.0]), tol, "out")
    with pytest.raises(PropertyViolation, match="with rtol applied to"):
        assert_close_to_terms(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([100.0]), tol, "out")
    with pytest.raises(PropertyViolation):
        assert_close_to_terms(torch.tensor([float("nan")]), torch.tensor([0.0]), torch.tensor([1.0]), tol, "out")


def test_assert_valid_selection_allows_ties_and_names_a_worse_pick() -> None:
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    assert_valid_selection(scores, torch.tensor([[0, 2]]), 2)  # a tie at the K-th place
    with pytest.raises(PropertyViolation) as info:
        assert_valid_selection(scores, torch.tensor([[0, 3]]), 2)
    assert info.value.details["observed"] == [0, 3] and info.value.details["expected"] == [0, 1]
    assert info.value.message.startswith("routing: token 0 picks an expert") and info.value.tolerance


def test_a_per_family_remap_is_judged_for_the_family_it_serves() -> None:
    """An engine with one remap per model class (`RemapCap.for_family`): the family served by a broken class fails,
    another family passes, each judged with its own class's remap."""
    good = make_target().remap
    cap = dataclasses.replace(good, for_family=lambda family: dataclasses.replace(good, fn=_remap_swaps_gate_up)
                              if family == "mixtral" else good)
    target = _broken(remap=cap)
    assert run_case(CHECKS["remap-idempotence"], target, get_family("mixtral"), max_examples=20).status == Status.FAIL
    assert run_case(CHECKS["remap-idempotence"], target, get_family("qwen3_moe"), max_examples=20).status == Status.PASS


class _DecoderAxisCapturer:
    """A capturer that declares one buffer slot per decoder layer (vLLM's layout); `moe_only` breaks that promise."""

    layer_axis = "decoder"

    def __init__(self, moe_only: bool) -> None:
        self.moe_only = moe_only

    def __call__(self, config, max_tokens: int) -> torch.Tensor:
        from reference.config import moe_layer_indices, num_decoder_layers, resolve_top_k

        layers = len(moe_layer_indices(config)) if self.moe_only else num_decoder_layers(config)
        return torch.zeros(max_tokens, layers, resolve_top_k(config), dtype=torch.int32)


def test_a_capturer_declaring_decoder_layers_is_held_to_every_decoder_layer() -> None:
    """jamba's tiny config has a dense layer 0 and an MoE layer 1: a decoder-axis buffer has 2 slots, not 1."""
    check = CHECKS["capturer-shape"]
    faithful = run_case(check, _broken(capturer=_DecoderAxisCapturer(moe_only=False)), get_family("jamba"),
                        max_examples=10)
    assert faithful.status == Status.PASS, faithful
    broken = run_case(check, _broken(capturer=_DecoderAxisCapturer(moe_only=True)), get_family("jamba"),
                      max_examples=10)
    assert broken.status == Status.FAIL and "every decoder layer" in broken.message, broken
