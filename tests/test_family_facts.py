"""The family records: one per family, keyed by the code they describe, and every family resolving as it did."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import transformers

from harness.tiny_configs import discover_moe_families, tiny_config
from reference.config import resolve_moe_spec
from reference.families import (
    FACTS,
    FamilyFacts,
    _described_class,
    code_fingerprint,
    describing,
    facts_for,
    undescribed,
)
from reference.variants import VARIANTS

SNAPSHOT = Path(__file__).parent / "data" / f"moe_specs_transformers-{transformers.__version__}.json"


def test_one_record_per_name() -> None:
    names = [n for f in FACTS for n in f.names]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_records_name_known_variants_and_layouts() -> None:
    for f in FACTS:
        assert f.routing is None or f.routing in VARIANTS, f
        assert f.shared in (None, "sigmoid_gate", "always_one", "parallel_dense"), f


def _resolved(make) -> object:
    try:
        spec = dataclasses.asdict(resolve_moe_spec(make()))
    except Exception as exc:  # noqa: BLE001 - the error text is part of what must not change
        return f"{type(exc).__name__}: {exc}"
    return json.loads(json.dumps(spec))


def resolutions() -> dict[str, dict[str, object]]:
    """Every discovered family's default and tiny config resolved (an MoESpec as JSON, or the error's text)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return {family: {"default": _resolved(CONFIG_MAPPING[family]), "tiny": _resolved(lambda f=family: tiny_config(f))}
            for family in discover_moe_families()}


@pytest.mark.skipif(not SNAPSHOT.exists(), reason=f"no resolution snapshot for transformers {transformers.__version__}"
                    " (write one with `python -m tests.test_family_facts`)")
def test_every_family_resolves_as_recorded() -> None:
    """Guard for moving facts between tables and records: every family's default and tiny config give the
    MoESpec (or the error) recorded before the move. After a deliberate change, read the difference and
    rewrite the snapshot with `python -m tests.test_family_facts`."""
    recorded, now = json.loads(SNAPSHOT.read_text()), resolutions()
    assert set(recorded) == set(now)
    changed = [f"{family} ({kind})" for family, want in recorded.items() for kind in want if now[family][kind] != want[kind]]
    assert not changed, f"resolution changed for {', '.join(changed)}"


def _facts_only(facts: FamilyFacts | None) -> FamilyFacts | None:
    """The record's facts without the names it goes by."""
    return None if facts is None else dataclasses.replace(facts, name="", blocks=(), aliases=())


def test_records_of_the_same_code_hold_the_same_facts() -> None:
    """Two records whose block classes are one code (a modular copy) must not disagree about what it does."""
    by_code: dict[str, list[FamilyFacts]] = {}
    for facts in FACTS:
        for block in facts.blocks:
            cls = _described_class(facts, block)
            digest = code_fingerprint(cls) if cls is not None else None
            if digest:
                by_code.setdefault(digest, []).append(facts)
    disagree = [[f.name for f in group] for group in by_code.values() if len({_facts_only(f) for f in group}) > 1]
    assert not disagree, f"records of identical block code disagree: {disagree}"


def _renamed_copy(tmp_path: Path, family: str, new: str, edit: tuple[str, str] | None = None) -> object:
    """A package holding a copy of `family`'s configuration and modeling modules with every class renamed to the
    `new` prefix (what transformers' modular copies are), `edit` applied to the modeling source; its config."""
    old_prefix = "Mixtral"
    package = tmp_path / f"fake_{new.lower()}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for kind in ("configuration", "modeling"):
        source = Path(importlib.import_module(f"transformers.models.{family}.{kind}_{family}").__file__).read_text()
        source = re.sub(r"from \.\.\.(?=\w)", "from transformers.", source).replace("from ... ", "from transformers ")
        source = source.replace(f"from .configuration_{family}",
                                                                            f"from .configuration_{new.lower()}")
        source = re.sub(rf"\b{old_prefix}(?=[A-Z_])", new, source).replace(f'"{family}"', f'"{new.lower()}"')
        if kind == "modeling" and edit:
            assert edit[0] in source
            source = source.replace(edit[0], edit[1], 1)
        (package / f"{kind}_{new.lower()}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(f"{package.name}.configuration_{new.lower()}")
        importlib.import_module(f"{package.name}.modeling_{new.lower()}")
    finally:
        sys.path.remove(str(tmp_path))
    return getattr(module, f"{new}Config")()


def test_a_renamed_copy_of_a_described_block_inherits_its_facts(tmp_path: Path) -> None:
    config = _renamed_copy(tmp_path, "mixtral", "FakeLoop")
    block = sys.modules[type(config).__module__.replace("configuration_", "modeling_")].FakeLoopSparseMoeBlock
    mixtral = _facts_only(next(f for f in FACTS if f.name == "mixtral"))
    # minimax's block is the same code as mixtral's, so either record may answer: their facts are one.
    assert _facts_only(describing(block)) == mixtral
    assert _facts_only(facts_for(config, "fakeloop")) == mixtral
    assert resolve_moe_spec(config).routing.renormalize is True  # mixtral's code fact, not the config's default


def test_a_changed_copy_is_not_described(tmp_path: Path) -> None:
    call = "self.gate(hidden_states)"  # the block routing its input; the copy routes a scaled input instead
    config = _renamed_copy(tmp_path, "mixtral", "FakeEdit", edit=(call, "self.gate(hidden_states * 2)"))
    block = sys.modules[type(config).__module__.replace("configuration_", "modeling_")].FakeEditSparseMoeBlock
    assert describing(block) is None
    reason = undescribed(block) or ""
    assert "FakeEditSparseMoeBlock" in reason and "not described yet" in reason


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(resolutions(), indent=0, sort_keys=True))
    print(f"wrote {SNAPSHOT}")
