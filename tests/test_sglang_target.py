"""The `sglang` target, inside its own environment (`moe-harness env python sglang -m pytest ...`, which
`scripts/test.sh` runs): its capabilities pass where SGLang is right, its recorded defects are caught as known and
nothing else fails with them. Wherever sglang does not import (the main venv) the target is unavailable, with the
reason."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import pytest
import torch

from harness.checks import CHECKS
from harness.checks.block_parity import check_block_parity
from harness.checks.routing_parity import check_routing
from harness.engine import _failure_record, run_case
from harness.families import get_family
from harness.strategies.block_inputs import BlockInput
from harness.strategies.routing_inputs import RoutingExample
from harness.targets import TargetUnavailable, load_target
from harness.targets.base import BlockCap
from harness.verdict import PropertyViolation, SkipKind, Status, skip_kind
from reference.config import RoutingKnobs

HAS_SGLANG = importlib.util.find_spec("sglang") is not None
needs_sglang = pytest.mark.skipif(not HAS_SGLANG, reason="sglang is not installed here; "
                                  "run `moe-harness env python sglang -m pytest tests/test_sglang_target.py`")


@pytest.mark.skipif(HAS_SGLANG, reason="sglang is installed here: the target loads")
def test_unavailable_without_sglang_names_the_reason() -> None:
    with pytest.raises(TargetUnavailable, match="sglang is not importable here.*its own environment"):
        load_target("sglang")


@pytest.fixture(scope="module")
def sglang_target():
    return load_target("sglang")


@needs_sglang
def test_target_fills_its_capabilities(sglang_target) -> None:
    assert sglang_target.capabilities() == ["routing", "remap", "expert_mapping", "capturer", "block", "weight_loader",
                                            "differential"]
    assert sglang_target.version == "0.5.23"


@needs_sglang
@pytest.mark.parametrize(("check", "family"), [
    ("routing-parity", "mixtral"), ("routing-parity", "qwen3_moe"), ("routing-parity", "gpt_oss"), ("expert-mapping", "any"),
    ("capturer-shape", "qwen3_moe"), ("capturer-shape", "jamba"), ("capturer-shape", "zaya"),
    ("block-parity", "qwen3_moe"), ("block-parity", "mixtral"), ("functional-call", "olmoe"),
    ("block-parity", "glm4_moe"), ("block-parity", "gpt_oss"), ("functional-call", "gpt_oss"),
    ("block-parity", "granitemoeshared"), ("functional-call", "granitemoeshared"),
    ("remap-idempotence", "granitemoe"), ("remap-idempotence", "granitemoeshared"),
])
def test_what_sglang_gets_right_passes(sglang_target, check: str, family: str) -> None:
    """Softmax top-k in float32 whatever the logits' dtype; the mapping's 3·E slots; the capture buffer with a slot per
    decoder layer (jamba: dense layers between MoE ones), for zaya too, whose config SGLang replaces with its own; its
    MoE blocks, found in the models its loader builds, on the torch-native path: sigmoid routing with a correction
    bias and a shared expert (glm4_moe), GPT-OSS's clamped SwiGLU on interleaved rows with expert biases, granite's
    shared MLP on the decoder layer."""
    verdict = run_case(CHECKS[check], sglang_target, get_family(family), max_examples=10)
    assert verdict.status == Status.PASS, verdict


@needs_sglang
@pytest.mark.parametrize(("check", "family"), [
    ("routing-parity", "deepseek_v3"), ("routing-parity", "laguna"),
    ("capturer-shape", "aria_text"), ("capturer-shape", "gemma4"), ("capturer-shape", "nemotron_h"),
    ("functional-call", "glm4_moe"), ("block-parity", "hy_v3"),
])
def test_recorded_defects_are_caught_as_known(sglang_target, check: str, family: str) -> None:
    """Entries for every family, and "also" checks, which no pin replays (the pinned ones replay in
    tests/test_findings.py: load-parity's whole-model loads are judged there once, not again here)."""
    verdict = run_case(CHECKS[check], sglang_target, get_family(family), max_examples=25)
    assert verdict.status == Status.KNOWN, verdict


@needs_sglang
@pytest.mark.parametrize(("family", "kind", "why"), [
    ("qwen2_moe", SkipKind.NOT_APPLICABLE, "forward launches a GPU kernel"),
    ("phimoe", SkipKind.NOT_APPLICABLE, "only with an accelerator"),
    ("gemma4_text", SkipKind.HARNESS_LIMIT, "forward needs more than hidden states"),
    ("lfm2_moe", SkipKind.NOT_APPLICABLE, "transformers builds no language model"),
])
def test_a_block_sglang_cannot_run_here_is_skipped_with_its_kind(sglang_target, family: str, kind: SkipKind,
                                                                  why: str) -> None:
    reason = sglang_target.block.skip(family)
    assert reason is not None and skip_kind(reason) == kind and why in reason, reason


@needs_sglang
def test_a_model_that_maps_no_checkpoint_key_has_no_remap(sglang_target) -> None:
    """The granite models apply SGLang's mapper to their keys; Qwen3-MoE's loader renames keys itself."""
    assert sglang_target.remap.of("granitemoe").fn.__doc__.endswith("GraniteMoeForCausalLM.hf_to_sglang_mapper")
    verdict = run_case(CHECKS["remap-idempotence"], sglang_target, get_family("qwen3_moe"), max_examples=1)
    assert verdict.status == Status.SKIP and verdict.skip_kind == SkipKind.NOT_APPLICABLE, verdict


@needs_sglang
def test_a_pick_from_a_dropped_group_is_caught_as_its_finding(sglang_target) -> None:
    """DeepSeek-V2's grouped router: a kept expert whose softmax underflows ties with the dropped groups' 0.0."""
    example = RoutingExample(torch.tensor([[200.0, 0.0, 0.0, 0.0]]),
                             RoutingKnobs("grouped_softmax", top_k=2, renormalize=False, n_group=2, topk_group=1,
                                          group_score="max"), None, None, "huge", 0)
    with pytest.raises(PropertyViolation) as caught:
        check_routing(sglang_target.routing, get_family("deepseek_v2"), example)
    record = _failure_record(CHECKS["routing-parity"], example, caught.value)[3]
    assert sglang_target.known_failure("routing-parity", "deepseek_v2", record) is not None, record


@needs_sglang
def test_sigmoid_bias_in_float32_is_exact(sglang_target) -> None:
    """The half-precision finding is the dtype alone: the same router on float32 logits weighs as the reference."""
    logits = torch.tensor([[4.625, -1.0, 0.5]])
    knobs = RoutingKnobs("sigmoid_bias", top_k=2, renormalize=True, scaling_factor=2.5)
    weights, ids = sglang_target.routing.fn(logits, knobs, bias=torch.zeros(3))
    assert ids.tolist() == [[0, 2]] or ids.tolist() == [[2, 0]]
    expected = torch.sigmoid(logits[0, ids[0].long()])
    torch.testing.assert_close(weights[0], 2.5 * expected / expected.sum())


@needs_sglang
def test_a_block_that_ignores_its_configs_renormalisation_is_caught(sglang_target) -> None:
    """Qwen3-MoE's block built right, then its TopK told to renormalise where the config's norm_topk_prob says not
    to (as a model ignoring the field would): block-parity sees the output differ."""
    family = get_family("qwen3_moe")
    assert not family.spec.routing.renormalize

    def ignoring(spec, seed=0, dtype=torch.float32):
        block = sglang_target.block.build(spec, seed, dtype)
        block.block.topk.topk_config.renormalize = True
        return block

    example = BlockInput(tokens=4, seed=0, scale=1.0)
    check_block_parity(BlockCap(sglang_target.block.build), family, example)
    with pytest.raises(PropertyViolation, match="block output"):
        check_block_parity(BlockCap(ignoring), family, example)


@needs_sglang
@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "afmoe"])
def test_load_parity_passes_where_sglang_loads_every_tensor_in_place(sglang_target, family: str) -> None:
    """Whole models built by SGLang's loader on one CPU rank, tensor parallel 2 and expert parallel 2 (two forked
    ranks); afmoe: its experts, each a slice of one packed tensor."""
    assert sglang_target.weight_loader.shardings == ("single", "tp2", "ep2")
    verdict = run_case(CHECKS["load-parity"], sglang_target, get_family(family), max_examples=1)
    assert verdict.status == Status.PASS, verdict


@needs_sglang
@pytest.mark.parametrize("family", ["glm4_moe", "gpt_oss"])
def test_differential_passes_where_both_loaders_compute_the_checkpoints_block(sglang_target, family: str) -> None:
    """The checkpoint transformers writes, loaded by SGLang's loader and by transformers': sigmoid routing with a
    correction bias and a shared expert; GPT-OSS's interleaved clamped SwiGLU with expert biases."""
    verdict = run_case(CHECKS["differential"], sglang_target, get_family(family), max_examples=1)
    assert verdict.status == Status.PASS, verdict


@needs_sglang
def test_differential_catches_a_loader_that_swaps_two_experts(sglang_target, monkeypatch) -> None:
    """SGLang's Mixtral loader patched to hand expert 0's tensors in under expert 1's name and back: its block differs
    from the reference the checkpoint means; transformers' does not."""
    from sglang.srt.models.mixtral import MixtralForCausalLM

    own = MixtralForCausalLM.load_weights

    def swapped(self, weights):
        return own(self, ((n.replace(".experts.0.", ".experts.@.").replace(".experts.1.", ".experts.0.")
                           .replace(".experts.@.", ".experts.1."), w) for n, w in weights))

    monkeypatch.setattr(MixtralForCausalLM, "load_weights", swapped)
    verdict = run_case(CHECKS["differential"], sglang_target, get_family("mixtral"), max_examples=5)
    assert verdict.status == Status.FAIL and verdict.counterexample["side"] == "engine", verdict


@needs_sglang
def test_gpt_oss_zeroed_down_bias_under_tensor_parallel_is_declared(sglang_target) -> None:
    """SGLang loads GPT-OSS's down-projection bias on tensor-parallel rank 0 only (zeros on the others, added once
    after the all-reduce): declared, so only the bf16 sinks (their finding, whose signature admits nothing else) fail."""
    loader = dataclasses.replace(sglang_target.weight_loader, shardings=("tp2",))
    verdict = run_case(CHECKS["load-parity"], dataclasses.replace(sglang_target, weight_loader=loader),
                       get_family("gpt_oss"), max_examples=1)
    assert verdict.status == Status.KNOWN and "sinks" in verdict.known_reason, verdict
    assert not any("w2_weight_bias" in p for p in verdict.counterexample["problems"]), verdict


@needs_sglang
def test_load_parity_catches_a_loader_that_swaps_two_experts(sglang_target) -> None:
    """SGLang's Mixtral loader patched, in the loading process, to hand expert 0's tensors in under expert 1's name
    and back."""
    swap = """
from sglang.srt.models.mixtral import MixtralForCausalLM
own = MixtralForCausalLM.load_weights
def swapped(self, weights):
    return own(self, ((n.replace(".experts.0.", ".experts.@.").replace(".experts.1.", ".experts.0.")
                       .replace(".experts.@.", ".experts.1."), w) for n, w in weights))
MixtralForCausalLM.load_weights = swapped
"""
    from harness.targets.sglang import loading

    broken = dataclasses.replace(sglang_target, weight_loader=dataclasses.replace(
        sglang_target.weight_loader, load=functools.partial(loading.load, prelude=swap)))
    verdict = run_case(CHECKS["load-parity"], broken, get_family("mixtral"), max_examples=1)
    assert verdict.status == Status.FAIL, verdict
    assert "row 0 is expert 0 (the engine's expert map) but holds expert 1" in verdict.message, verdict.message


@needs_sglang
def test_load_parity_catches_expert_parallel_ranks_loading_each_others_experts(sglang_target) -> None:
    """SGLang's FusedMoE patched, in the loading processes, to place the other rank's block of experts in each rank's
    rows under expert parallelism (its expert map says otherwise)."""
    swap = """
from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
own = FusedMoE._map_global_expert_id_to_local_expert_id
def other_ranks(self, expert_id):
    if self.moe_ep_size == 1:
        return own(self, expert_id)
    start = (self.moe_ep_size - 1 - self._expert_storage_rank) * self._num_local_routed
    return expert_id - start if start <= expert_id < start + self._num_local_routed else -1
FusedMoE._map_global_expert_id_to_local_expert_id = other_ranks
"""
    from harness.targets.sglang import loading

    broken = dataclasses.replace(sglang_target, weight_loader=dataclasses.replace(
        sglang_target.weight_loader, load=functools.partial(loading.load, prelude=swap)))
    verdict = run_case(CHECKS["load-parity"], broken, get_family("qwen3_moe"), max_examples=1)
    assert verdict.status == Status.FAIL, verdict
    assert "[ep2] rank 0: " in verdict.message and "row 0 is expert 0 (the engine's expert map) but holds expert 4" \
        in verdict.message, verdict.message
