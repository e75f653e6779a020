"""The `torchtitan` target, inside its own environment (`moe-harness env python torchtitan -m pytest ...`, which
`scripts/test.sh` runs): its capabilities pass where torchtitan is right (the controls of the bf16 tolerance and of
the inert statistics buffer), its recorded defects are still caught as known, and every torchtitan model with an MoE
flavor has its converter judged. Wherever torchtitan does not import (the main venv) the target is unavailable, with
the reason."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import get_family
from harness.targets import TargetUnavailable, load_target
from harness.verdict import Status

# As the target itself says once: a CPU has no float32 autocast, and no Triton backend for fla.
pytestmark = [pytest.mark.filterwarnings("ignore:In CPU autocast, but the target dtype is not supported"),
              pytest.mark.filterwarnings("ignore:Triton is not supported on current platform")]
HAS_TORCHTITAN = importlib.util.find_spec("torchtitan") is not None
needs_torchtitan = pytest.mark.skipif(not HAS_TORCHTITAN, reason="torchtitan is not installed here; "
                                      "run `moe-harness env python torchtitan -m pytest tests/test_torchtitan_target.py`")


@pytest.mark.skipif(HAS_TORCHTITAN, reason="torchtitan is installed here: the target loads")
def test_unavailable_without_torchtitan_names_the_reason() -> None:
    with pytest.raises(TargetUnavailable, match="torchtitan is not importable here.*its own environment"):
        load_target("torchtitan")


@pytest.fixture(scope="module")
def torchtitan_target():
    return load_target("torchtitan")


@needs_torchtitan
def test_target_fills_its_capabilities(torchtitan_target) -> None:
    assert torchtitan_target.capabilities() == ["routing", "block", "swap", "converter"]
    assert torchtitan_target.version == "0.3.0"


@needs_torchtitan
@pytest.mark.parametrize(("check", "family"), [
    ("block-parity", "qwen3_moe"), ("block-parity", "deepseek_v3"), ("block-parity", "qwen2_moe"),
    ("functional-call", "deepseek_v3"), ("swap-parity", "mixtral"), ("routing-parity", "mixtral"),
    ("converter-roundtrip", "kimi_k25"),
])
def test_what_torchtitan_gets_right_passes(torchtitan_target, check: str, family: str) -> None:
    """bf16 experts held to the size of their terms, the statistics buffer truly inert, DeepSeek's converter exact
    (kimi_k25's first failure is the backend's recorded one, its model adapter's round trip is exact)."""
    verdict = run_case(CHECKS[check], torchtitan_target, get_family(family), max_examples=5)
    if check == "converter-roundtrip":
        assert verdict.status == Status.KNOWN and "KimiK25StateDictAdapter" not in str(verdict.counterexample), verdict
    else:
        assert verdict.status == Status.PASS, verdict


@needs_torchtitan
@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "afmoe", "mixtral"])
def test_recorded_converter_defects_are_caught_as_known(torchtitan_target, family: str) -> None:
    verdict = run_case(CHECKS["converter-roundtrip"], torchtitan_target, get_family(family), max_examples=2)
    assert verdict.status == Status.KNOWN, verdict


@needs_torchtitan
def test_every_torchtitan_moe_model_has_its_converter_judged() -> None:
    """A torchtitan model with an MoE flavor and a state-dict adapter is in MODEL_ADAPTERS (a new one is not left
    out silently), each naming a transformers family and one of its flavors."""
    import torchtitan.models

    from harness.targets.torchtitan.converters import MODEL_ADAPTERS
    from harness.tiny_configs import discover_moe_families

    with_moe = set()
    for info in pkgutil.iter_modules(torchtitan.models.__path__):
        module = importlib.import_module(f"torchtitan.models.{info.name}")
        configs = [v for k, v in vars(module).items() if k.endswith("_configs") and isinstance(v, dict)]
        if not configs or not hasattr(module, "model_registry"):
            continue
        for flavor in (f for f in configs[0] if f.startswith("debugmodel")):
            spec = module.model_registry(flavor)
            layers = getattr(spec.model, "layers", None) or ()
            if spec.state_dict_adapter is not None and any(getattr(layer, "moe", None) for layer in layers):
                with_moe.add(info.name)
    assert with_moe == set(MODEL_ADAPTERS), with_moe ^ set(MODEL_ADAPTERS)
    for package, (flavor, family) in MODEL_ADAPTERS.items():
        assert family in discover_moe_families(), (package, family)
        spec = importlib.import_module(f"torchtitan.models.{package}").model_registry(flavor)
        assert any(getattr(layer, "moe", None) is not None for layer in spec.model.layers), (package, flavor)
