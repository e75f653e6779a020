"""Strategies generate what they claim."""

from __future__ import annotations

import hypothesis
import torch
from hypothesis import Phase, find, given, settings

from harness.families import get_family
from harness.strategies.block_inputs import (
    INPUT_SCALES,
    BlockInput,
    SubstitutionExample,
    block_inputs,
    substitution_examples,
)
from harness.strategies.configs import SYNTHETIC, ConfigExample, capture_requests
from harness.strategies.conversion_keys import (
    ConversionExample,
    conversion_examples,
    grammar_keys,
    mixed_checkpoints,
    some_names,
)
from harness.strategies.keys import checkpoint_keys
from harness.strategies.mapping_calls import CALL_FORMS, CKPT_NAMES, MappingExample, mapping_examples
from harness.strategies.moe_problems import STYLES as MOE_STYLES
from harness.strategies.moe_problems import MoEProblem, moe_problems, problem_inputs
from harness.strategies.padding import PaddedDim, PaddingExample, padded_dims, padding_examples
from harness.strategies.router_knobs import SCALING_FACTORS, KnobExample, flip_values, knob_examples
from harness.strategies.routing_inputs import routing_examples
from harness.strategies.sizes import REAL_EXPERT_COUNTS, sizes
from harness.strategies.spellings import (
    EXPERT_COUNTS,
    MAX_TOP_K,
    SpellingExample,
    by_quantity,
    spelling_examples,
)
from harness.targets.base import ConversionRules, Knob, Spelling
from harness.targets.reference import ALL_SCHEMAS
from reference.checkpoint import REFERENCE_SCHEMA, parse_expert_key


@settings(max_examples=50, deadline=None)
@given(checkpoint_keys(ALL_SCHEMAS, REFERENCE_SCHEMA))
def test_checkpoint_keys_parse_and_count(ckpt) -> None:
    keys = ckpt.keys()
    assert len(keys) == len(set(keys))
    assert all(parse_expert_key(k) is not None for k in keys)
    per_layer = 2 if ckpt.schema.layout == "fused" else 3 * ckpt.num_experts * len(ckpt.suffixes)
    assert len(keys) == ckpt.num_layers * per_layer
    assert len(ckpt.expected()) == len(keys)


@given(padded_dims())
def test_padded_dims_in_range(dim) -> None:
    assert 1 <= dim.hidden <= 8192
    if dim.alignment == "512B":
        assert dim.elements * torch.empty((), dtype=dim.dtype).element_size() == 512


@settings(max_examples=100, deadline=None)
@given(routing_examples())
def test_routing_examples_are_valid(ex) -> None:
    t, e = ex.logits.shape
    assert 1 <= ex.knobs.top_k <= e and t >= 1
    if ex.knobs.variant == "grouped":
        assert e % ex.knobs.n_group == 0
        assert ex.knobs.top_k <= ex.knobs.topk_group * (e // ex.knobs.n_group)
    if ex.style == "neg_inf":
        assert (torch.isfinite(ex.logits.float()).sum(-1) >= ex.knobs.top_k).all()


@settings(max_examples=50, deadline=None)
@given(routing_examples(("softmax_topk", "sigmoid_topk_on_logits"), renormalize=(False,)))
def test_routing_examples_keep_the_renormalize_values_asked_for(ex) -> None:
    """A routing function without a renormalize knob is drawn the value it computes only."""
    assert ex.knobs.renormalize is False


# ---- the strategies moved out of the check modules: what they draw, and what they shrink to -------------


def _minimal(strategy, condition):
    """The example `strategy` shrinks to under `condition` (a condition that always holds stops the shrinker
    early, so each test asks for something)."""
    return find(strategy, condition, settings=settings(database=None, max_examples=200, deadline=None))


@given(block_inputs())
def test_block_inputs_in_range(example) -> None:
    assert isinstance(example, BlockInput)
    assert 1 <= example.tokens <= 16 and 0 <= example.seed <= 2**16 and example.scale in INPUT_SCALES


@given(substitution_examples())
def test_substitution_examples_in_range(example) -> None:
    assert isinstance(example, SubstitutionExample)
    assert 4 <= example.tokens <= 16 and 0 <= example.seed <= 2**16


@given(padding_examples())
def test_padding_examples_in_range(example) -> None:
    assert isinstance(example, PaddingExample) and isinstance(example.dim, PaddedDim)
    assert 1 <= example.tokens <= 8 and 0 <= example.seed <= 2**16 and 1 <= example.dim.hidden <= 8192


_SPELLINGS = (Spelling("num_experts", "num_local_experts"), Spelling("num_experts", "n_routed_experts", "ffn"),
              Spelling("top_k", "num_experts_per_tok"), Spelling("top_k", "moe_k", alias=True))


def test_by_quantity_groups_every_spelling_and_names_every_quantity() -> None:
    assert by_quantity(_SPELLINGS) == {"num_experts": list(_SPELLINGS[:2]), "top_k": list(_SPELLINGS[2:])}
    assert by_quantity(()) == {"num_experts": [], "top_k": []}


@given(spelling_examples(by_quantity(_SPELLINGS)))
def test_spelling_examples_set_each_quantity_through_its_own_names(example) -> None:
    assert isinstance(example, SpellingExample)
    (experts_name, experts), (top_k_name, top_k) = example.settings()
    assert experts_name in _SPELLINGS[:2] and top_k_name in _SPELLINGS[2:]
    assert experts in EXPERT_COUNTS and experts % 2 == 0
    assert 1 <= top_k <= min(MAX_TOP_K, experts // 2)


def test_spelling_examples_shrink_to_the_first_names_and_four_experts() -> None:
    example = _minimal(spelling_examples(by_quantity(_SPELLINGS)), lambda e: e.top_k[1] >= 2)
    assert example == SpellingExample((_SPELLINGS[0], 4), (_SPELLINGS[2], 2))


def _rules() -> ConversionRules:
    own = ("model.layers.0.mlp.experts.gate_up_proj", "model.norm.weight")
    legacy = ("model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.norm.weight")
    return ConversionRules(rename=lambda key: key, own_names=own, base_names={"layers.0.mlp.gate.weight": own[0]},
                           legacy_names=legacy, groups=((own[:1], legacy[:1]), (own[1:], legacy[1:])),
                           schemas=(REFERENCE_SCHEMA,), merge=lambda key: None, explain=lambda key: [])


@given(conversion_examples(_rules()))
def test_conversion_examples_draw_each_source_from_its_names(example) -> None:
    rules = _rules()
    assert isinstance(example, ConversionExample)
    assert [c.source for c in example.checkpoints] == ["own", "base", "legacy", "checkpoint", "grammar"]
    own, base, legacy, mixed, grammar = example.checkpoints
    assert set(own.keys) <= set(rules.own_names) and set(base.keys) <= set(rules.base_names)
    assert set(legacy.keys) <= set(rules.legacy_names)
    assert len(mixed.keys) == len(rules.groups) and set(mixed.keys) <= {*rules.own_names, *rules.legacy_names}
    assert grammar.schema == REFERENCE_SCHEMA and all(parse_expert_key(k) is not None for k in grammar.keys)


def test_conversion_parts_shrink_to_whole_name_sets_all_converted_and_one_grammar_expert() -> None:
    rules = _rules()
    # "all of them" is one choice, fewer than any list: a source's names shrink to the whole set.
    assert _minimal(some_names("own", rules.own_names), lambda c: len(c.keys) >= 1).keys == rules.own_names
    assert _minimal(mixed_checkpoints(rules), lambda c: "model.norm.weight" in c.keys).keys == rules.own_names
    grammar = _minimal(grammar_keys((REFERENCE_SCHEMA, ALL_SCHEMAS[-1])), lambda c: len(c.keys) >= 3)
    assert (grammar.schema, grammar.keys) == (REFERENCE_SCHEMA, tuple(REFERENCE_SCHEMA.keys(1, 1, ("weight",))))


@given(mapping_examples())
def test_mapping_examples_in_range_and_called_as_described(example) -> None:
    assert isinstance(example, MappingExample) and example.call_form in CALL_FORMS
    assert 1 <= example.num_experts <= 64 and 0 <= example.num_redundant <= example.num_experts
    if example.call_form.endswith("no-redundant"):
        assert example.num_redundant == 0
    calls = []
    example.call(lambda *args, **kwargs: calls.append((args, kwargs)))
    (args, kwargs), = calls
    assert CKPT_NAMES[example.names][0] in (*args, *kwargs.values())
    assert example.source.startswith("(") and str(example.num_experts) in example.source


def test_mapping_examples_shrink_to_one_expert_positional() -> None:
    assert _minimal(mapping_examples(), lambda e: e.num_redundant >= 1) == MappingExample(1, 1, "proj", "positional")


_MIXTRAL = get_family("mixtral")


@settings(max_examples=25, deadline=None)
@given(moe_problems(_MIXTRAL, (torch.float32, torch.bfloat16)))
def test_moe_problems_have_the_family_sizes_and_inputs_to_match(p) -> None:
    spec = _MIXTRAL.spec
    assert isinstance(p, MoEProblem) and p.style in MOE_STYLES and p.dtype in (torch.float32, torch.bfloat16)
    assert (p.experts, p.top_k, p.hidden, p.width) == (spec.num_experts, spec.top_k, spec.hidden_size,
                                                      spec.intermediate_size)
    assert 1 <= p.tokens <= 40
    x, weights, ids, gate_up, down = problem_inputs(_MIXTRAL, p)
    assert x.shape == (p.tokens, p.hidden) and x.dtype == p.dtype
    assert weights.shape == ids.shape == (p.tokens, p.top_k) and ids.dtype == torch.int32
    assert gate_up.shape == (p.experts, 2 * p.width, p.hidden) and down.shape == (p.experts, p.hidden, p.width)


def test_moe_problems_shrink_to_the_fewest_tokens_first_dtype_routed() -> None:
    p = _minimal(moe_problems(_MIXTRAL, (torch.float32, torch.bfloat16)), lambda p: p.tokens >= 5)
    assert (p.tokens, p.dtype, p.style, p.seed) == (5, torch.float32, "routed", 0)


_KNOBS = (Knob("renormalize", "norm_topk_prob", False), Knob("scaling_factor", "routed_scaling_factor", 2.0))


@given(knob_examples(_KNOBS, _MIXTRAL.spec))
def test_knob_examples_flip_a_declared_knob_to_a_valid_other_value(example) -> None:
    assert isinstance(example, KnobExample) and example.knob in _KNOBS
    assert example.value != example.knob.default
    assert example.value in flip_values(example.knob, _MIXTRAL.spec, _KNOBS)
    assert 8 <= example.tokens <= 32 and 0 <= example.seed <= 2**16 and example.scale in (1.0, 4.0)


def test_flip_values_keep_grouped_configs_valid() -> None:
    spec = _MIXTRAL.spec
    groups = (Knob("n_group", "n_group", 1), Knob("topk_group", "topk_group", 1))
    for g in flip_values(groups[0], spec, groups):
        assert spec.num_experts % g == 0 and spec.top_k <= spec.num_experts // g
    assert flip_values(_KNOBS[1], spec, _KNOBS) == [v for v in SCALING_FACTORS if v != 2.0]


def test_knob_examples_shrink_to_the_first_value_fewest_tokens_seed_zero() -> None:
    example = _minimal(knob_examples(_KNOBS, _MIXTRAL.spec), lambda e: e.knob.kind == "scaling_factor")
    assert example == KnobExample(_KNOBS[1], SCALING_FACTORS[0], 8, 0, 1.0)


@settings(max_examples=25, deadline=None)
@given(capture_requests(SYNTHETIC))
def test_capture_requests_pair_a_config_with_a_token_budget(drawn) -> None:
    example, max_tokens = drawn
    assert isinstance(example, ConfigExample) and 1 <= max_tokens <= 64
    assert 1 <= example.top_k <= 8 and 1 <= example.num_moe_layers <= 4


# ---- sizes: weighted toward bounds and released models' values, under any seed ----------------------------


def _drawn(strategy, seed: int, examples: int) -> list:
    """What `strategy` generates in one dev-sized run at Hypothesis seed `seed` (generation only)."""
    seen: list = []

    @hypothesis.seed(seed)
    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None)
    @given(strategy)
    def run(value) -> None:
        seen.append(value)

    run()
    return seen


def test_sizes_give_about_half_their_draws_to_bounds_and_favoured_values() -> None:
    special = {1, 64, *REAL_EXPERT_COUNTS}
    drawn = [v for seed in range(8) for v in _drawn(sizes(1, 64, REAL_EXPERT_COUNTS), seed, 25)]
    assert all(1 <= v <= 64 for v in drawn)
    assert 0.35 <= sum(v in special for v in drawn) / len(drawn) <= 0.75
    assert len(set(drawn) - special) >= 20  # the rest of the range is still drawn
    assert _minimal(sizes(3, 40, (8,)), lambda v: v > 5) == 6  # shrinks toward the lower bound


def test_a_dev_run_of_routing_examples_draws_real_top_ks_and_k_equal_e() -> None:
    """Mixtral's top-2 and K = E in most dev-sized runs, whatever the seed (uniform draws gave top-2 in 14
    of 40 runs)."""
    runs = [_drawn(routing_examples(("softmax_topk",)), seed, 25) for seed in range(10)]
    assert sum(any(ex.knobs.top_k == 2 for ex in run) for run in runs) >= 8
    assert sum(any(ex.knobs.top_k == ex.logits.shape[1] > 1 for ex in run) for run in runs) >= 8
    assert sum(any(ex.logits.shape[0] == 1 for ex in run) for run in runs) >= 8
