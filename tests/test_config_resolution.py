"""Config resolution: every MoE family of the installed transformers resolves or is listed unsupported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.strategies.configs import synthetic_configs
from harness.tiny_configs import discover_moe_families, tiny_config
from reference.config import (
    TOP_K_SPELLINGS,
    ConfigError,
    resolve_moe_spec,
    resolve_top_k,
)
from reference.families import UNSUPPORTED_FAMILIES

FAMILIES = discover_moe_families()
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def pinned_version(package: str) -> str:
    """The version constraints.txt pins `package` to (the latest supported)."""
    found = re.search(rf"^{re.escape(package)}==(\S+)", CONSTRAINTS.read_text(), re.MULTILINE)
    assert found, f"{CONSTRAINTS} pins no {package}"
    return found.group(1)


def test_discovers_many_families() -> None:
    resolved = [f for f in FAMILIES if f not in UNSUPPORTED_FAMILIES]
    print(f"\n{len(resolved)} of {len(FAMILIES)} MoE families of the installed transformers resolve; "
          f"{len(UNSUPPORTED_FAMILIES)} listed unsupported")
    assert len(FAMILIES) > 60


def test_unsupported_table_has_no_stale_entries() -> None:
    import transformers

    if transformers.__version__ != pinned_version("transformers"):
        pytest.skip(f"the table is kept for transformers {pinned_version('transformers')}; an older one "
                    f"({transformers.__version__}) lacks the newer families it lists")
    assert set(UNSUPPORTED_FAMILIES) <= set(FAMILIES)


def _config_round_trip_broken(family: str) -> str | None:
    """Why the family's config class cannot take back its own to_dict() here (a defect of this
    transformers, fixed in later ones), or None."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[family]
    try:
        cls(**cls().to_dict())
    except Exception as exc:  # noqa: BLE001 - any refusal of its own output is the defect
        return f"{cls.__name__}(**{cls.__name__}().to_dict()) raises {type(exc).__name__}: {str(exc)[:120]}"
    return None


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_config_resolves(family: str) -> None:
    broken = _config_round_trip_broken(family)
    if broken:
        pytest.xfail(f"transformers defect: {broken}")
    if family in UNSUPPORTED_FAMILIES:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        # The family as released: shrinking may drop what the reference cannot model
        # (dots3_note_vision_encoder's two kept layers carry no per-layer expert counts).
        with pytest.raises(ConfigError):
            resolve_moe_spec(CONFIG_MAPPING[family]())
        return
    spec = resolve_moe_spec(tiny_config(family))
    assert 0 < spec.top_k <= spec.num_experts
    assert spec.hidden_size > 0 and spec.intermediate_size > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_default_config_resolves_or_raises_typed_error(family: str) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        resolve_moe_spec(CONFIG_MAPPING[family]())
    except ConfigError as exc:
        assert str(exc)  # a message naming what was tried


@settings(max_examples=60, deadline=None)
@given(synthetic_configs(mappings=True))
def test_every_spelling_and_nesting_resolves(case) -> None:
    assert resolve_top_k(case.config) == case.top_k


def test_missing_top_k_names_every_spelling() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_moe_spec({"num_experts": 8, "hidden_size": 16, "intermediate_size": 8})
    for name in TOP_K_SPELLINGS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"num_experts": 4, "num_experts_per_tok": 5}, "exceeds routed experts"),
        ({"num_experts": 4, "num_experts_per_tok": 0}, "must be positive"),
        ({"num_experts": 4, "num_experts_per_tok": 2.5}, "not an integer"),
        ({"num_experts": 4, "num_experts_per_tok": 2, "intermediate_size": None}, "expert intermediate size"),
        ({"num_experts": 6, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2}, "does not divide"),
    ],
)
def test_bad_configs_raise_typed_errors_with_values(fields: dict, needle: str) -> None:
    config = {"hidden_size": 16, "intermediate_size": 8, **fields}
    with pytest.raises(ConfigError) as err:
        resolve_moe_spec(config)
    assert needle in str(err.value)
    for value in fields.values():
        if value not in (None, 2, 4) and not isinstance(value, bool):
            assert str(value) in str(err.value)


@given(st.sampled_from(TOP_K_SPELLINGS), st.integers(1, 8))
def test_capturer_reads_any_spelling(spelling: str, top_k: int) -> None:
    from reference.capturer import RoutedExpertsCapturer

    buf = RoutedExpertsCapturer({spelling: top_k, "num_experts": 8, "num_hidden_layers": 3}, 5).buffer
    assert buf.shape == (5, 3, top_k) and buf.dtype.is_floating_point is False
