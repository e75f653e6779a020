"""expert-mapping reads the engine's declared fused-parameter names and shard ids (vLLM's by default) instead of
assuming vLLM's, and stays exactly as strict: a real mapping bug fails whatever the names."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import Family
from harness.targets import load_target
from harness.targets.base import ExpertMappingCap, Target
from harness.verdict import ErrorKind, Status, Verdict

Row = tuple[str, str, int, str]
# An engine that names its fused parameters and shards otherwise than vLLM (w13/w2, w1/w3/w2).
PARAMS = ("mlp.experts.gate_up_weight", "mlp.experts.down_weight")
SHARDS = ("gate", "up", "down")


def engine_mapping(bug: str = "") -> Callable[..., list[Row]]:
    """The engine's mapping in its own names; `bug` plants one real mapping defect."""

    def mapping(ckpt_gate_proj_name: str, ckpt_down_proj_name: str, ckpt_up_proj_name: str, num_experts: int,
                num_redundant_experts: int = 0) -> list[Row]:
        rows = []
        for slot in range(num_experts + num_redundant_experts):
            expert = 0 if bug == "redundant-to-zero" and slot >= num_experts else slot % num_experts
            projections = [("gate", ckpt_gate_proj_name, PARAMS[0]), ("up", ckpt_up_proj_name, PARAMS[0]),
                           ("down", ckpt_down_proj_name, PARAMS[1])]
            if bug == "gate-up-swapped":
                projections[0], projections[1] = ("gate", ckpt_up_proj_name, PARAMS[0]), ("up", ckpt_gate_proj_name,
                                                                                          PARAMS[0])
            if bug == "down-into-gate-up":
                projections[2] = ("down", ckpt_down_proj_name, PARAMS[0])
            rows += [(param, f"experts.{expert}.{name}.", slot, shard) for shard, name, param in projections]
        return rows

    return mapping


def judge(cap: ExpertMappingCap) -> Verdict:
    """The expert-mapping verdict on a target offering only `cap`."""
    target = Target(name="other-names", version="1", description="an engine naming its fused params its own way",
                    expert_mapping=cap)
    return run_case(CHECKS["expert-mapping"], target, Family("any"), max_examples=40)


def test_engine_with_other_names_passes_when_it_declares_them() -> None:
    verdict = judge(ExpertMappingCap(new=engine_mapping(), fused_params=PARAMS, shard_ids=SHARDS))
    assert verdict.status == Status.PASS, verdict


def test_engine_with_other_names_fails_undeclared_and_the_failure_says_what_to_declare() -> None:
    verdict = judge(ExpertMappingCap(new=engine_mapping(), shard_ids=SHARDS))
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION
    assert "ExpertMappingCap.fused_params" in verdict.message
    verdict = judge(ExpertMappingCap(new=engine_mapping(), fused_params=PARAMS))
    assert verdict.status == Status.FAIL and "ExpertMappingCap.shard_ids" in verdict.message


@pytest.mark.parametrize("bug", ["redundant-to-zero", "gate-up-swapped", "down-into-gate-up"])
def test_declared_names_still_catch_a_broken_mapping(bug: str) -> None:
    verdict = judge(ExpertMappingCap(new=engine_mapping(bug), fused_params=PARAMS, shard_ids=SHARDS))
    assert verdict.status == Status.FAIL, f"{bug} was not caught: {verdict}"
    assert verdict.kind == ErrorKind.PROPERTY_VIOLATION and verdict.counterexample


@pytest.mark.parametrize(("fused_params", "shard_ids"), [
    (("proj", "down_proj"), SHARDS),  # one name inside the other: a down row would match both
    (("", "down"), SHARDS),
    (PARAMS, ("w1", "w1", "w2")),
])
def test_ambiguous_declarations_are_refused(fused_params: tuple[str, str], shard_ids: tuple[str, str, str]) -> None:
    with pytest.raises(ValueError, match="ExpertMappingCap"):
        ExpertMappingCap(new=engine_mapping(), fused_params=fused_params, shard_ids=shard_ids)


@pytest.mark.parametrize("name", ["reference", "seeds-fixed"])
def test_targets_with_vllm_names_pass_on_the_defaults(name: str) -> None:
    cap = load_target(name).expert_mapping
    assert cap is not None and (cap.fused_params, cap.shard_ids) == (("w13", "w2"), ("w1", "w3", "w2"))
    assert judge(cap).status == Status.PASS
