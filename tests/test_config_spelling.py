"""config-spelling over the real transformers: real families pass, a known defect is reported as known,
and a wrapper around the real capability that loses one spelling is caught."""

from __future__ import annotations

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import get_family
from harness.targets import load_target
from harness.targets.base import ConfigSpellingCap, Spelling
from harness.targets.transformers.spellings import spellings
from harness.verdict import ErrorKind, Status
from tests.broken_targets import transformers_with

CHECK = CHECKS["config-spelling"]


def _json_drops_top_k(family: str, form: str, settings: tuple[tuple[Spelling, int], ...]):
    """A loader that reads config.json but loses the top-k key: the model falls back to the class default."""
    real = load_target("transformers").config_spelling
    assert real is not None
    kept = tuple((s, v) for s, v in settings if not (form == "config.json" and s.quantity == "top_k"))
    return real.used(family, form, kept)


def _alias_dropped(family: str, form: str, settings: tuple[tuple[Spelling, int], ...]):
    """A config layer that forgets attribute_map aliases: a value set through one never arrives."""
    real = load_target("transformers").config_spelling
    assert real is not None
    return real.used(family, form, tuple((s, v) for s, v in settings if not s.alias))


def test_spellings_cover_fields_aliases_and_nesting() -> None:
    assert {str(s) for s in spellings("qwen3_moe")} >= {"num_local_experts", "num_experts (alias)",
                                                        "num_experts_per_tok"}
    assert {str(s) for s in spellings("gemma4")} == {"text_config.num_experts", "text_config.top_k_experts"}
    assert Spelling("top_k", "num_experts_per_tok", alias=True) in spellings("ernie4_5_moe")


@pytest.mark.parametrize("family", ["qwen3_moe", "gemma4", "ernie4_5_moe"])
def test_real_families_pass(family: str) -> None:
    verdict = run_case(CHECK, load_target("transformers"), get_family(family), max_examples=5)
    assert verdict.status == Status.PASS, verdict


def test_ignored_top_k_is_a_known_failure() -> None:
    verdict = run_case(CHECK, load_target("transformers"), get_family("phimoe"), max_examples=5)
    assert verdict.status == Status.KNOWN, verdict


@pytest.mark.parametrize(("used", "family"), [(_json_drops_top_k, "qwen3_moe"), (_alias_dropped, "ernie4_5_moe")])
def test_broken_spelling_is_caught(used, family: str) -> None:
    verdict = run_case(CHECK, transformers_with("config_spelling", used=used), get_family(family), max_examples=15)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
    assert verdict.counterexample["set"] != verdict.counterexample["used"]


def test_capability_has_every_form() -> None:
    cap = load_target("transformers").config_spelling
    assert isinstance(cap, ConfigSpellingCap) and set(cap.forms) == {"constructor", "config.json", "setattr"}
