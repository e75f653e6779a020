"""The `vllm` target: runs vLLM's own CPU-reachable MoE code through the checks (`tox -e vllm`), and is
unavailable, with the reason, wherever vLLM does not import (the main venv and CI)."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import DEFAULT_FAMILIES, get_family
from harness.selection import plan
from harness.strategies.configs import SYNTHETIC
from harness.targets import TargetUnavailable, load_target
from harness.verdict import Status

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed here; run `tox -e vllm`")

# What runs on the CPU, by check: the families each runs over, and what every case must end as.
CASES = [
    ("routing-parity", "gemma4"),
    ("expert-mapping", "any"),
    ("remap-idempotence", "gemma4"),
    ("functional-call", "gemma4"),
    ("block-parity", "gemma4"),
    *[("capturer-shape", f) for f in DEFAULT_FAMILIES],
]


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
    assert vllm_target.capabilities() == ["routing", "remap", "expert_mapping", "capturer", "block"]
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
    """RemapCap takes no family, so each family's vLLM mapper chain runs as its own copy of the target."""
    from harness.targets.vllm import mappers as vllm_mappers

    if (reason := vllm_mappers.skip_reason(family)) is not None:
        pytest.skip(reason)
    target = dataclasses.replace(vllm_target, remap=vllm_mappers.remap_cap(family))
    verdict = run_case(CHECKS["remap-idempotence"], target, get_family(family), max_examples=25)
    assert verdict.status == Status.PASS, verdict


@needs_vllm
def test_blocks_of_other_families_are_skipped_with_the_reason(vllm_target) -> None:
    verdict = run_case(CHECKS["functional-call"], vllm_target, get_family("mixtral"))
    assert verdict.status == Status.SKIP and "gemma4" in verdict.message


@needs_vllm
def test_functional_call_reaches_per_expert_scale(vllm_target) -> None:
    """Seed 000 on the real code: a new per_expert_scale given to functional_call changes vLLM's output."""
    import torch
    from torch.func import functional_call

    spec = get_family("gemma4").spec
    block = vllm_target.block.build(spec, seed=1)
    x = torch.randn(6, spec.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scale = block.router.per_expert_scale * 3 + 1
        assert not torch.equal(functional_call(block, {"router.per_expert_scale": scale}, (x,)), block(x))
