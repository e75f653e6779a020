"""conversion-remap over transformers' real conversion rules: real families pass or fail as recorded, broken renames fail."""

from __future__ import annotations

import dataclasses
import re

import pytest

from harness.checks import CHECKS
from harness.checks.conversion_remap import CONVERSION_REMAP
from harness.engine import run_case
from harness.families import get_family
from harness.strategies.conversion_keys import ConversionExample, ConversionKeys
from harness.targets.base import ConversionCap, ConversionRules, Target
from harness.targets.transformers import make_target
from harness.targets.transformers.conversion import (
    CONVERSION,
    FamilyConversion,
    family_conversion,
    missing_loading_api,
)
from harness.verdict import ErrorKind, PropertyViolation, Status
from tests.broken_targets import conversion_with

CHECK = CHECKS["conversion-remap"]
# On a transformers without the load-time rename functions the check calls, the check skips (with this
# reason) and so does this file.
pytestmark = pytest.mark.skipif(missing_loading_api() is not None, reason=str(missing_loading_api()))
EXAMPLES = 15


def _target(conversion: ConversionCap = CONVERSION, known: bool = True) -> Target:
    target = dataclasses.replace(make_target(), conversion=conversion)
    return target if known else dataclasses.replace(target, name="transformers-unrecorded", known_failures=[])


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "minimax_m2"])
def test_real_families_pass(family: str) -> None:
    verdict = run_case(CHECK, _target(), get_family(family), max_examples=EXAMPLES)
    assert verdict.status == Status.PASS, verdict


def test_legacy_names_load_into_own_names_and_merges_are_declared() -> None:
    rules = family_conversion("mixtral").rules()
    legacy = [k for k in rules.legacy_names if ".block_sparse_moe.experts." in k]
    assert legacy and {rules.rename(k) for k in legacy} <= set(rules.own_names)
    gate, up = (f"model.layers.0.block_sparse_moe.experts.0.{w}.weight" for w in ("w1", "w3"))
    assert rules.rename(gate) == rules.rename(up) == "model.layers.0.mlp.experts.gate_up_proj"
    merges = [rules.merge(gate), rules.merge(up)]
    assert all(merges) and merges[0][0] == merges[1][0] and merges[0][1] != merges[1][1]  # type: ignore[index]


def test_laguna_is_a_recorded_failure_and_the_report_names_the_rule() -> None:
    """laguna's `mlp.shared_expert.` rule (unescaped dot) also matches `mlp.shared_experts`."""
    assert run_case(CHECK, _target(), get_family("laguna"), max_examples=EXAMPLES).status == Status.KNOWN
    verdict = run_case(CHECK, _target(known=False), get_family("laguna"), max_examples=EXAMPLES)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert "shared_experts..gate_proj" in str(verdict.counterexample)
    assert "mlp.shared_expert." in str(verdict.counterexample.get("rules") or verdict.counterexample["rules_once"])


def test_seed_regex_added_to_the_rules_is_caught() -> None:
    """Seed 002: an unanchored `\\.experts\\.` -> `.moe.experts.` rule also rewrites keys already under `.moe.`."""
    from transformers.core_model_loading import WeightRenaming

    real = family_conversion("qwen3_moe")
    seed = WeightRenaming(r"\.experts\.", ".moe.experts.")
    verdict = run_case(CHECK, _target(conversion_with("qwen3_moe", _renamings=[*real._renamings, seed]), known=False),
                       get_family("qwen3_moe"), max_examples=EXAMPLES)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert ".moe." in str(verdict.counterexample)


def test_rename_without_the_load_loops_fallback_is_caught() -> None:
    """The rules alone (no exact-name fallback) move axk1's own `mlp.post_mlp_layernorm` to `mlp.mlp.`."""
    real = family_conversion("axk1")
    verdict = run_case(CHECK, _target(conversion_with("axk1", rename=real._rules), known=False), get_family("axk1"),
                       max_examples=EXAMPLES)
    assert verdict.status == Status.FAIL and "mlp.mlp.post_mlp_layernorm" in str(verdict.counterexample), verdict


def test_two_converters_writing_one_name_are_caught() -> None:
    """down_proj merged into gate_up_proj by a second converter: a collision no single declared merge explains."""
    from transformers.core_model_loading import MergeModulelist, WeightConverter

    real = family_conversion("qwen3_moe")
    wrong = WeightConverter("mlp.experts.*.down_proj.weight", "mlp.experts.gate_up_proj",
                            operations=[MergeModulelist(dim=0)])
    converters = [real._converters[0], wrong]
    broken = conversion_with("qwen3_moe", _converters=converters, _converter_of={p: c for c in converters
                                                                        for p in c.source_patterns})
    verdict = run_case(CHECK, _target(broken, known=False), get_family("qwen3_moe"), max_examples=EXAMPLES)
    assert verdict.status == Status.FAIL and "no declared merge" in verdict.message, verdict


def test_scale_folded_onto_weight_is_caught() -> None:
    """A renaming that drops a quantization suffix sends two keys into one merge slot."""
    from transformers.core_model_loading import WeightRenaming

    real = family_conversion("qwen3_moe")
    fold = WeightRenaming(r"\.weight_scale_inv", ".weight")
    rules = conversion_with("qwen3_moe", _renamings=[*real._renamings, fold]).rules("qwen3_moe")
    keys = ("model.layers.0.mlp.experts.0.gate_proj.weight", "model.layers.0.mlp.experts.0.gate_proj.weight_scale_inv")
    with pytest.raises(PropertyViolation, match="no declared merge"):
        CONVERSION_REMAP.prop(_target(ConversionCap(lambda name: rules)), get_family("qwen3_moe"),
                         ConversionExample((ConversionKeys("grammar", keys),)))


def _seed_rules(rename: object) -> ConversionRules:
    """Hand-written rules over vLLM's Gemma4 names (`.moe.experts.`), with the seed's remap as the rename."""
    own = ("model.layers.0.moe.experts.0.gate_proj.weight", "model.layers.0.moe.experts.0.down_proj.weight")
    legacy = tuple(k.replace(".moe.", ".") for k in own)
    return ConversionRules(rename=rename, own_names=own, base_names={}, legacy_names=legacy,  # type: ignore[arg-type]
                           groups=((own, legacy),), schemas=(), merge=lambda key: None,
                           explain=lambda key: ["seed remap"])


@pytest.mark.parametrize(("pattern", "status"), [
    (r"\.experts\.(\d+)\.", Status.FAIL),  # seed 002 before the fix
    (r"(?<!\.moe)\.experts\.(\d+)\.", Status.PASS),  # after it
])
def test_seed_002_remap_fails_and_its_fix_passes(pattern: str, status: str) -> None:
    rules = _seed_rules(lambda key: re.sub(pattern, r".moe.experts.\1.", key))
    verdict = run_case(CHECK, _target(ConversionCap(lambda name: rules), known=False), get_family("gemma4"),
                       max_examples=EXAMPLES)
    assert verdict.status == status, verdict
    if status == Status.FAIL:
        assert ".moe.moe.experts" in str(verdict.counterexample)


def test_family_conversion_reads_the_rules_transformers_loads_with() -> None:
    """The rules are transformers' own for the model class, legacy renamings included, none copied here."""
    conversion = family_conversion("mixtral")
    assert isinstance(conversion, FamilyConversion) and conversion.model_class == "MixtralForCausalLM"
    assert any(".block_sparse_moe." in p for r in conversion._renamings for p in r.source_patterns)
    assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in conversion.legacy_names
