"""router-knobs over the real transformers: real routers pass, and a wrapper around the real router that
ignores a knob (or applies it wrongly) is caught."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import get_family, tiny_spec
from harness.strategies.router_knobs import flip_values
from harness.targets import load_target
from harness.targets.base import RouterRun
from harness.targets.transformers.knobs import knobs
from harness.targets.transformers.spellings import with_moe_fields
from harness.verdict import ErrorKind, Status
from tests.broken_targets import transformers_with

CHECK = CHECKS["router-knobs"]


def _ignoring(field: str):
    """A router builder that drops `field`: the router keeps the default, whatever was set."""
    from harness.targets.transformers.knobs import build

    def build_ignoring(family: str, overrides: tuple[tuple[str, Any], ...], seed: int) -> RouterRun:
        run = build(family, tuple((n, v) for n, v in overrides if n != field), seed)
        # The config still says what was asked for; only the router ignores it.
        return dataclasses.replace(run, config=with_moe_fields(family, dict(overrides)))

    return build_ignoring


def _always_renormalizes(family: str, overrides: tuple[tuple[str, Any], ...], seed: int) -> RouterRun:
    """The real router with its top-K weights renormalised whatever the config says."""
    from harness.targets.transformers.knobs import build

    run = build(family, overrides, seed)

    def route(x):
        w, ids = run.route(x)
        return w / w.sum(-1, keepdim=True), ids

    return dataclasses.replace(run, route=route)


def test_knobs_are_read_from_the_config() -> None:
    assert {k.name for k in knobs("deepseek_v3")} == {"norm_topk_prob", "routed_scaling_factor", "n_group",
                                                       "topk_group", "num_experts_per_tok"}
    assert [k.kind for k in knobs("mixtral")] == ["top_k"]  # every MoE config declares its experts per token
    assert {k.kind for k in knobs("kimi_linear")} >= {"renormalize", "n_group"}
    assert all(flip_values(k, tiny_spec("deepseek_v3"), knobs("deepseek_v3")) for k in knobs("deepseek_v3"))


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
def test_real_routers_pass(family: str) -> None:
    verdict = run_case(CHECK, load_target("transformers"), get_family(family), max_examples=5)
    assert verdict.status == Status.PASS, verdict


def test_router_ignoring_a_knob_is_caught() -> None:
    verdict = run_case(CHECK, transformers_with("router_knobs", build=_ignoring("norm_topk_prob")), get_family("qwen3_moe"), max_examples=5)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert verdict.message.startswith("knob with no effect: norm_topk_prob"), verdict.message


def test_router_applying_a_knob_wrongly_is_caught() -> None:
    verdict = run_case(CHECK, transformers_with("router_knobs", build=_always_renormalizes), get_family("qwen3_moe"), max_examples=5)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict


def test_router_ignoring_the_experts_per_token_is_caught() -> None:
    broken = transformers_with("router_knobs", build=_ignoring("num_experts_per_tok"))
    verdict = run_case(CHECK, broken, get_family("mixtral"), max_examples=5)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert verdict.message.startswith("knob with no effect: num_experts_per_tok"), verdict.message


def test_one_group_is_still_grouped_routing() -> None:
    """n_group=1 keeps DeepSeek-V3's grouped path (sigmoid, bias, scaling); it is not plain softmax top-K."""
    from reference.config import resolve_moe_spec

    routing = resolve_moe_spec(with_moe_fields("deepseek_v3", {"n_group": 1})).routing
    assert (routing.variant, routing.n_group, routing.topk_group) == ("grouped", 1, 1)
    assert routing.scaling_factor == 2.5
