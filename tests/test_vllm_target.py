"""The `vllm` target: runs vLLM's own CPU-reachable MoE code through the checks (`tox -e vllm`), and is
unavailable, with the reason, wherever vLLM does not import (the main venv and CI)."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import DEFAULT_FAMILIES, get_family
from harness.selection import plan
from harness.strategies.configs import SYNTHETIC
from harness.targets import TargetUnavailable, load_target
from harness.targets.base import BlockCap
from harness.verdict import ErrorKind, SkipKind, Status, skip_kind

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed here; run `tox -e vllm`")

# What runs on the CPU, by check: the families each runs over, and what every case must end as.
CASES = [
    ("routing-parity", "gemma4"),
    ("routing-parity", "llama4_text"),  # Llama 4's own routing function, handed to vLLM's router
    ("expert-mapping", "any"),
    ("remap-idempotence", "gemma4"),
    ("functional-call", "gemma4"),
    ("block-parity", "gemma4"),
    # Blocks found in the models vLLM's loader builds: softmax top-k, a shared expert with its gate (qwen2_moe).
    ("functional-call", "mixtral"),
    ("block-parity", "mixtral"),
    ("block-parity", "qwen2_moe"),
    *[("capturer-shape", f) for f in DEFAULT_FAMILIES],
]


def test_each_family_is_routed_by_its_models_routing_function() -> None:
    """The router's own paths serve a family unless its vLLM model hands the router a function (no vLLM needed:
    the capability names what it will call)."""
    from harness.targets.vllm import routing

    cap = routing.capability(runs_over=("mixtral", "llama4_text", "cohere2_moe", "gemma4"))
    assert cap.of("mixtral") is cap and "grouped" in cap.variants and cap.group_scores == ("max",)
    llama4 = cap.of("llama4_text")
    assert llama4.variants == ("sigmoid_topk_on_logits",) and llama4.renormalize == (False,)
    assert llama4.fn.__qualname__ == "Llama4MoE.custom_routing_function"
    assert cap.of("cohere2_moe").variants == ("sigmoid_topk_on_logits", "topk_softmax")
    assert cap.of("gemma4").variants == ("gemma4",)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here: the target loads")
def test_unavailable_without_vllm_names_the_reason() -> None:
    with pytest.raises(TargetUnavailable, match="vllm is not importable here.*moe-harness env build vllm"):
        load_target("vllm")
    missing = plan(["vllm"], ["routing-parity"]).missing
    assert len(missing) == 1 and not missing[0].error and "its own environment" in missing[0].reason


@pytest.fixture(scope="module")
def vllm_target():
    return load_target("vllm")


@needs_vllm
def test_target_fills_its_capabilities(vllm_target) -> None:
    assert vllm_target.capabilities() == ["routing", "remap", "expert_mapping", "capturer", "block", "weight_loader",
                                          "differential"]
    assert vllm_target.version == "0.32.0"


@needs_vllm
@pytest.mark.parametrize(("check", "family"), CASES)
def test_cpu_reachable_code_passes(vllm_target, check: str, family: str) -> None:
    verdict = run_case(CHECKS[check], vllm_target, get_family(family), max_examples=10)
    assert verdict.status == Status.PASS, verdict


@needs_vllm
def test_new_family_spellings_are_a_known_failure(vllm_target) -> None:
    verdict = run_case(CHECKS["capturer-shape"], vllm_target, get_family(SYNTHETIC), max_examples=25)
    assert verdict.status == Status.KNOWN, verdict


@needs_vllm
@pytest.mark.parametrize("family", list(DEFAULT_FAMILIES))
def test_each_model_class_mapper_chain(vllm_target, family: str) -> None:
    """The target's remap is the chain of the model class serving each family (as the CLI runs it)."""
    from harness.targets.vllm import mappers as vllm_mappers

    verdict = run_case(CHECKS["remap-idempotence"], vllm_target, get_family(family), max_examples=25)
    if family in vllm_mappers.CHAINS:
        assert verdict.status == Status.PASS, verdict
        assert vllm_target.remap.of(family).fn.__doc__ == f"vLLM's {vllm_mappers.CHAINS[family].describe()} key mapping"
    else:
        assert verdict.status == Status.SKIP and verdict.message == vllm_mappers.skip_reason(family), verdict


@needs_vllm
def test_cohere2_moes_sigmoid_routing_function_passes(vllm_target) -> None:
    """Cohere2-MoE's `token_choice_with_bias`, handed to the router for a sigmoid selection, computes the
    sigmoid_topk_on_logits variant (run on llama4_text's cases, the variant's family vLLM serves)."""
    from harness.targets.vllm import routing

    cohere2 = routing.capability(runs_over=()).of("cohere2_moe")
    target = dataclasses.replace(vllm_target, routing=dataclasses.replace(cohere2, for_family=None))
    verdict = run_case(CHECKS["routing-parity"], target, get_family("llama4_text"), max_examples=5)
    assert verdict.status == Status.PASS, verdict


@needs_vllm
def test_a_block_vllm_cannot_build_on_a_cpu_is_not_applicable(vllm_target) -> None:
    reason = vllm_target.block.skip("gpt_oss")
    assert reason is not None and skip_kind(reason) == SkipKind.NOT_APPLICABLE and "CPU build" in reason, reason


@needs_vllm
def test_functional_call_leaving_its_value_in_a_runner_held_module_is_known(vllm_target) -> None:
    """The runner holds the block's router again: torch's functional_call leaves the substituted router weight."""
    verdict = run_case(CHECKS["functional-call"], vllm_target, get_family("qwen3_moe"), max_examples=3)
    assert verdict.status == Status.KNOWN and "block.experts.gate.weight" in verdict.counterexample["held_as"], verdict


@needs_vllm
def test_block_parity_catches_weight_processing_that_alters_an_expert(vllm_target) -> None:
    """Mixtral's block built right, then its first expert's packed w13 doubled after vLLM's CPU processing (as a
    repacking that does not preserve values would): block-parity sees the output differ."""
    family = get_family("mixtral")

    def altered(spec, seed=0, dtype=torch.float32):
        block = vllm_target.block.build(spec, seed, dtype)
        with torch.no_grad():
            block.block.experts.routed_experts.w13_weight[0] *= 2
        return block

    verdict = run_case(CHECKS["block-parity"], dataclasses.replace(vllm_target, block=BlockCap(altered)), family,
                       max_examples=10)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict


@needs_vllm
def test_functional_call_reaches_per_expert_scale(vllm_target) -> None:
    """Seed 000 on the real code: a new per_expert_scale given to functional_call changes vLLM's output."""
    from torch.func import functional_call

    spec = get_family("gemma4").spec
    block = vllm_target.block.build(spec, seed=1)
    x = torch.randn(6, spec.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scale = block.router.per_expert_scale * 3 + 1
        assert not torch.equal(functional_call(block, {"router.per_expert_scale": scale}, (x,)), block(x))


@needs_vllm
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_differential_passes_where_both_loaders_compute_the_checkpoints_block(vllm_target, family: str) -> None:
    verdict = run_case(CHECKS["differential"], vllm_target, get_family(family), max_examples=1)
    assert verdict.status == Status.PASS, verdict


@needs_vllm
def test_differential_catches_a_loader_that_swaps_two_experts(vllm_target, monkeypatch) -> None:
    """Mixtral's `load_weights` patched to swap experts 0 and 1 of its first MoE layer after loading: the block vLLM
    loaded differs from the reference the checkpoint means, transformers' does not, and the failure says so."""
    from vllm.model_executor.models.mixtral import MixtralForCausalLM

    loads = MixtralForCausalLM.load_weights

    def swapped(self, weights):
        loaded = loads(self, weights)
        with torch.no_grad():
            for param in self.model.layers[0].block_sparse_moe.experts.routed_experts.parameters():
                param[[0, 1]] = param[[1, 0]].clone()
        return loaded

    monkeypatch.setattr(MixtralForCausalLM, "load_weights", swapped)
    verdict = run_case(CHECKS["differential"], vllm_target, get_family("mixtral"), max_examples=5)
    assert verdict.status == Status.FAIL and verdict.counterexample["side"] == "engine", verdict


def _load_parity(target, family: str, *shardings: str):
    """load-parity's verdict on one example of `family` loaded under `shardings`."""
    target = dataclasses.replace(target, weight_loader=dataclasses.replace(target.weight_loader, shardings=shardings))
    return run_case(CHECKS["load-parity"], target, get_family(family), max_examples=1)


@needs_vllm
@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
def test_load_parity_passes_where_vllm_loads_every_tensor_in_place(vllm_target, family: str) -> None:
    """One rank, tensor parallel 2 and expert parallel 2 (two rank processes)."""
    verdict = _load_parity(vllm_target, family, "single", "tp2", "ep2")
    assert verdict.status == Status.PASS, verdict


@needs_vllm
def test_load_parity_catches_a_loader_that_swaps_two_experts(vllm_target, monkeypatch) -> None:
    """vLLM's Mixtral loader patched to hand expert 0's tensors in under expert 1's name and back."""
    from vllm.model_executor.models.mixtral import MixtralForCausalLM

    own = MixtralForCausalLM.load_weights

    def swapped(self, weights):
        renamed = ((n.replace(".experts.0.", ".experts.@.").replace(".experts.1.", ".experts.0.")
                    .replace(".experts.@.", ".experts.1."), w) for n, w in weights)
        return own(self, renamed)

    monkeypatch.setattr(MixtralForCausalLM, "load_weights", swapped)
    verdict = _load_parity(vllm_target, "mixtral", "single")
    assert verdict.status == Status.FAIL, verdict
    assert "row 0 is expert 0 (the engine's expert map) but holds expert 1" in verdict.message, verdict.message


@needs_vllm
def test_load_parity_catches_a_declared_expert_mapping_that_disagrees_with_the_load(vllm_target, monkeypatch) -> None:
    """DeepSeek-V2's `get_expert_mapping()` patched to name each expert's checkpoint tensors as the next expert's (what
    a mapping built over other expert ids than `load_weights` uses declares); its load is untouched."""
    from vllm.model_executor.models.deepseek_v2 import DeepseekV2ForCausalLM

    own = DeepseekV2ForCausalLM.get_expert_mapping

    def shifted(self):
        mapping = own(self)
        experts = 1 + max(e for _, _, e, _ in mapping)
        return [(p, w, (e + 1) % experts, s) for p, w, e, s in mapping]

    monkeypatch.setattr(DeepseekV2ForCausalLM, "get_expert_mapping", shifted)
    verdict = _load_parity(vllm_target, "deepseek_v2", "single")
    assert verdict.status == Status.FAIL, verdict
    assert "get_expert_mapping() says 'experts.0.gate_proj.' -> 'experts.routed_experts.w13_', expert 1, shard w1, but " \
           "loading put it in" in verdict.message, verdict.message


@needs_vllm
def test_load_parity_catches_rows_holding_other_experts_than_the_expert_map_says(vllm_target, monkeypatch) -> None:
    """The expert map read as the other half of the experts (what reversed start/end bounds give a rank): the rows vLLM
    loaded no longer hold the experts the map routes to them."""
    from harness.targets.vllm import models

    own = models._expert_rows

    def reversed_bounds(model):
        rows = own(model)
        return {name: tuple(sorted(set(range(2 * len(ids))) - set(ids))) for name, ids in rows.items()}

    monkeypatch.setattr(models, "_expert_rows", reversed_bounds)
    verdict = _load_parity(vllm_target, "mixtral", "single")
    assert verdict.status == Status.FAIL and "(the engine's expert map) but holds expert" in verdict.message, verdict
