"""config-accepted and its config-variant strategy: fields are read from real config classes, the strategy
draws what it claims, well-behaved families pass, and a target whose accepted config crashes or returns NaN
in forward is caught, naming the field and value."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Literal

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from torch import nn

from harness.checks import CHECKS
from harness.checks.config_accepted import check_config_accepted
from harness.engine import run_case
from harness.families import Family, get_family
from harness.strategies.config_variants import (
    MAX_EXPERTS,
    MAX_FIELDS,
    MAX_TOP_K,
    VariantExample,
    relation_role,
    relations_hold,
    variant_examples,
)
from harness.targets import load_target
from harness.targets.base import ConfigRejected, ConfigVariantsCap, Target, VariantFailed
from harness.targets.config_fields import compared_strings, declared_fields
from harness.targets.transformers.config_variants import fields
from harness.verdict import ErrorKind, PropertyViolation, Status
from tests.broken_targets import assumes_every_layer_sparse, transformers_with

CHECK = CHECKS["config-accepted"]
FAMILIES = ("qwen3_moe", "deepseek_v3", "mixtral", "gpt_oss", "qwen3_next")


def _by_name(family: str) -> dict[str, Any]:
    return {f.name: f for f in fields(family)}


# --- the fields, read from the real config classes -----------------------------------------------------------

def test_fields_come_from_the_config_class() -> None:
    qwen3 = _by_name("qwen3_moe")
    assert qwen3["norm_topk_prob"].kind == "bool" and qwen3["num_experts_per_tok"].kind == "int"
    assert "num_local_experts" in qwen3  # declared as `num_experts`, stored through attribute_map
    assert qwen3["mlp_only_layers"].kind == "layer_ids" and qwen3["mlp_only_layers"].layers == 2
    assert "hidden_size" not in qwen3 and "rms_norm_eps" not in qwen3  # not MoE fields
    deepseek = _by_name("deepseek_v3")
    assert deepseek["n_group"].optional and deepseek["routed_scaling_factor"].kind == "float"
    gpt_oss = _by_name("gpt_oss")
    assert set(gpt_oss["layer_types"].choices) == {"sliding_attention", "full_attention"}
    # full_attention comes from the class's full-size default pattern: the tiny one is all linear_attention
    assert set(_by_name("qwen3_next")["layer_types"].choices) >= {"linear_attention", "full_attention"}


def test_string_choices_come_from_literals_and_the_modeling_source() -> None:
    assert set(_by_name("nllb-moe")["router_dtype"].choices) == {"float32", "float16", "bfloat16"}  # Literal
    cohere = _by_name("cohere2_moe")  # plain `str` fields: choices the modeling code compares them with
    assert set(cohere["expert_selection_fn"].choices) == {"softmax", "sigmoid"}
    assert set(cohere["shared_expert_combination_strategy"].choices) == {"average", "sum"}
    assert set(_by_name("deepseek_v2")["topk_method"].choices) >= {"greedy", "group_limited_greedy"}


def test_compared_strings_reads_comparisons() -> None:
    source = ('if config.mode == "a":\n    pass\nelif self.mode != \'b\':\n    pass\n'
              'if "c" == config.kind or config.layer_types[i] in ("x", "y"):\n    pass\n')
    assert compared_strings(source) == {"mode": ("a", "b"), "kind": ("c",), "layer_types": ("x", "y")}


# --- the strategy draws what it claims --------------------------------------------------------------------------

@pytest.mark.parametrize(("family", "kinds"), [
    ("qwen3_moe", {"bool", "int", "float", "layer_ids"}),
    ("deepseek_v3", {"bool", "int", "float"}),
    ("mixtral", {"bool", "int", "float"}),
    ("gpt_oss", {"bool", "int", "float", "layer_kinds"}),
    ("qwen3_next", {"bool", "int", "float", "layer_ids", "layer_kinds"}),
    ("cohere2_moe", {"str", "layer_kinds"}),
])
def test_strategy_draws_each_kind(family: str, kinds: set[str]) -> None:
    declared = fields(family)
    for kind in kinds:
        example = find(variant_examples(declared), lambda ex, k=kind: any(f.kind == k for f, _ in ex.overrides),
                       settings=settings(max_examples=500, database=None))
        assert any(f.kind == kind for f, _ in example.overrides)


def test_strategy_draws_none_for_an_optional_field() -> None:
    example = find(variant_examples(fields("deepseek_v3")), lambda ex: any(v is None for _, v in ex.overrides),
                   settings=settings(max_examples=500, database=None))
    assert all(f.optional for f, v in example.overrides if v is None)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=60, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_drawn_values_are_new_small_and_consistent(family: str, data: st.DataObject) -> None:
    declared = fields(family)
    example: VariantExample = data.draw(variant_examples(declared))
    assert len(example.overrides) <= MAX_FIELDS
    assert len({f.name for f, _ in example.overrides}) == len(example.overrides)
    roles = {relation_role(f.name): f.default for f in declared if relation_role(f.name)}
    bounds = {"experts": MAX_EXPERTS, "top_k": MAX_TOP_K}
    for f, value in example.overrides:
        assert value != f.default or type(value) is not type(f.default), (f, value)
        if f.kind == "layer_kinds" and value is not None:
            assert len(value) == f.layers and set(value) <= set(f.choices), (f, value)
        if f.kind == "layer_ids" and value is not None:
            assert set(value) <= set(range(f.layers)), (f, value)
        role = relation_role(f.name)
        if role:
            roles[role] = value
            assert value is None or value <= bounds.get(role, MAX_EXPERTS), (f, value)
    assert relations_hold(roles), roles


# --- the property, on the real transformers ------------------------------------------------------------------

@pytest.mark.parametrize("family", ["mixtral", "gpt_oss"])
def test_well_behaved_families_pass(family: str) -> None:
    verdict = run_case(CHECK, load_target("transformers"), get_family(family), max_examples=5)
    assert verdict.status == Status.PASS, verdict


def _nan_when_renormalizing(family: str, overrides: tuple[tuple[str, Any], ...]) -> torch.Tensor:
    """The real build and forward, but the field is dropped before the build and its True value poisons the
    output: a wrapper that ignores norm_topk_prob and returns NaN for one of its values."""
    real = load_target("transformers").config_variants
    assert real is not None
    out = real.build_and_run(family, tuple((n, v) for n, v in overrides if n != "norm_topk_prob"))
    return out * float("nan") if dict(overrides).get("norm_topk_prob") is True else out


def test_nan_for_an_accepted_value_is_caught() -> None:
    broken = transformers_with("config_variants", build_and_run=_nan_when_renormalizing)
    verdict = run_case(CHECK, broken, get_family("qwen3_moe"), max_examples=30)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert verdict.counterexample["fields"] == {"norm_topk_prob": True}, verdict.counterexample
    assert "non-finite" in verdict.message and "norm_topk_prob=True" in verdict.message


def test_dense_layer_crash_is_caught_under_the_default_profile() -> None:
    broken = transformers_with("config_variants", build_and_run=assumes_every_layer_sparse)
    verdict = run_case(CHECK, broken, get_family("qwen3_moe"))
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert verdict.counterexample["stage"] == "model build", verdict.counterexample
    assert set(verdict.counterexample["fields"]) <= {"decoder_sparse_step", "mlp_only_layers"}


# --- a small real target whose config class accepts a value its model crashes on ------------------------------

@dataclasses.dataclass
class ToyMoEConfig:
    """A config class as transformers writes them: annotated fields, a validator for the relations it knows."""

    num_hidden_layers: int = 2
    hidden_size: int = 8
    num_experts: int = 4
    num_experts_per_tok: int = 2
    norm_topk_prob: bool = True
    expert_selection_fn: Literal["softmax", "sigmoid"] = "softmax"
    shared_expert_combination: str = "sum"

    def __post_init__(self) -> None:
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(f"num_experts_per_tok ({self.num_experts_per_tok}) > num_experts ({self.num_experts})")


class ToyMoE(nn.Module):
    """A routed MoE layer stack; its "average" combination (a choice only its source names) has a shape bug."""

    def __init__(self, config: ToyMoEConfig) -> None:
        super().__init__()
        self.config = config
        torch.manual_seed(0)
        h, e = config.hidden_size, config.num_experts
        self.router = nn.ModuleList(nn.Linear(h, e, bias=False) for _ in range(config.num_hidden_layers))
        self.experts = nn.ParameterList(nn.Parameter(torch.randn(e, h, h) / h) for _ in range(config.num_hidden_layers))
        self.shared = nn.ModuleList(nn.Linear(h, h) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        for router, experts, shared in zip(self.router, self.experts, self.shared, strict=True):
            logits = router(x)
            probs = logits.softmax(-1) if cfg.expert_selection_fn == "softmax" else logits.sigmoid()
            weights, ids = probs.topk(cfg.num_experts_per_tok, dim=-1)
            if cfg.norm_topk_prob:
                weights = weights / weights.sum(-1, keepdim=True)
            routed = torch.einsum("tk,tkh->th", weights, torch.einsum("th,tkgh->tkg", x, experts[ids]))
            if cfg.shared_expert_combination == "sum":
                x = x + routed + shared(x)
            elif cfg.shared_expert_combination == "average":
                x = x + torch.stack([routed, shared(x)]).mean(-1)  # the bug: averages over hidden, not the pair
        return x


def _toy_build_and_run(family: str, overrides: tuple[tuple[str, Any], ...]) -> torch.Tensor:
    try:
        config = ToyMoEConfig(**dict(overrides))
    except Exception as exc:
        raise ConfigRejected(exc) from exc
    try:
        model = ToyMoE(config)
    except Exception as exc:
        raise VariantFailed("model build", exc) from exc
    try:
        with torch.no_grad():
            return model(torch.randn(3, config.hidden_size, generator=torch.Generator().manual_seed(0)))
    except Exception as exc:
        raise VariantFailed("forward", exc) from exc


TOY_FIELDS = declared_fields(ToyMoEConfig, dataclasses.asdict(ToyMoEConfig()),
                             choices=compared_strings(inspect.getsource(ToyMoE)))
TOY = Target(name="toy", version="0", description="a toy MoE whose config accepts a value its forward crashes on",
             config_variants=ConfigVariantsCap(lambda family: TOY_FIELDS, _toy_build_and_run))


def test_toy_fields_come_from_its_class_and_source() -> None:
    by_name = {f.name: f for f in TOY_FIELDS}
    assert set(by_name) == {"num_experts", "num_experts_per_tok", "norm_topk_prob", "expert_selection_fn",
                            "shared_expert_combination"}
    assert set(by_name["shared_expert_combination"].choices) == {"sum", "average"}


def test_accepted_value_crashing_in_forward_is_caught() -> None:
    verdict = run_case(CHECK, TOY, Family("toy"), max_examples=50)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert verdict.counterexample["fields"] == {"shared_expert_combination": "average"}, verdict.counterexample
    assert verdict.counterexample["stage"] == "forward"
    assert "shared_expert_combination='average'" in verdict.message and "RuntimeError" in verdict.message


def test_refusal_at_construction_holds_only_with_a_message() -> None:
    field = TOY_FIELDS[0]
    example = VariantExample(((field, 3),))

    def refusing(message: str) -> ConfigVariantsCap:
        def build_and_run(family: str, overrides: tuple[tuple[str, Any], ...]) -> torch.Tensor:
            raise ConfigRejected(ValueError(message))
        return ConfigVariantsCap(lambda family: TOY_FIELDS, build_and_run)

    check_config_accepted(refusing("num_experts must be even"), Family("toy"), example)
    with pytest.raises(PropertyViolation, match="no message"):
        check_config_accepted(refusing(""), Family("toy"), example)
