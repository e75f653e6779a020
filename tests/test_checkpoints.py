"""Checkpoints on disk: the strategy writes what it claims, the reference loader loads every schema and
format exactly, bad files give a named CheckpointError (and a classified verdict), broken loaders are
caught, and transformers' from_pretrained holds the fingerprinted tensors in the right slots."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json

import pytest
import torch
from hypothesis import find, given, settings
from safetensors import safe_open

from harness.checks.checkpoint_roundtrip import CHECKPOINT_ROUNDTRIP
from harness.engine import run_case
from harness.families import get_family
from harness.profiles import profile_settings
from harness.strategies.checkpoint_files import (
    FORMATS,
    CheckpointPlan,
    as_bits,
    formats_of,
    write_checkpoint,
    write_full_checkpoint,
)
from harness.strategies.checkpoints import BAD_KINDS, bad_checkpoints, break_checkpoint, checkpoint_plans
from harness.targets.base import CheckpointLoaderCap, Target
from harness.targets.reference import ALL_SCHEMAS, make_target
from harness.targets.transformers.checkpoint import CHECKPOINT_LOADER, resave
from harness.targets.transformers.families import record
from harness.verdict import ErrorKind, PropertyViolation, Status
from reference.checkpoint import ExpertParamEntry, KeySchema, make_expert_params_mapping, parse_expert_key
from reference.loader import load_checkpoint
from reference.shards import INDEX_NAME, CheckpointError

PER_EXPERT = KeySchema("model.", "mlp", "per_expert", "proj")
FUSED = KeySchema("model.language_model.", "", "fused", "proj")
W_NAMES = KeySchema("", "block_sparse_moe", "per_expert", "w")


def _plan(**fields: object) -> CheckpointPlan:
    base = dict(family="mixtral", schema=PER_EXPERT, num_layers=2, num_experts=3, hidden=32, intermediate=16)
    return CheckpointPlan(**{**base, **fields})  # type: ignore[arg-type]


# ---- the strategy ------------------------------------------------------------------------------------

@settings(profile_settings("dev"), max_examples=30)
@given(checkpoint_plans("qwen3_moe", ALL_SCHEMAS))
def test_strategy_writes_what_the_plan_says(plan: CheckpointPlan) -> None:
    ckpt = write_checkpoint(plan)
    files = sorted(p.name for p in ckpt.directory.glob("*.safetensors"))
    assert json.loads((ckpt.directory / "config.json").read_text())["model_type"] == "qwen3_moe"
    assert (ckpt.spec.hidden_size, ckpt.spec.intermediate_size, ckpt.spec.num_experts) == (
        plan.hidden, plan.intermediate, plan.num_experts)
    assert ckpt.spec.moe_layers == tuple(i for i in range(plan.num_layers) if i not in plan.dense_layers)
    assert len(files) == min(plan.shards, len(ckpt.shard_of))
    on_disk = {}
    for name in files:
        with safe_open(ckpt.directory / name, framework="pt") as f:
            on_disk.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 - not a dict
    assert set(on_disk) == set(ckpt.shard_of)
    if (ckpt.directory / INDEX_NAME).exists():
        assert json.loads((ckpt.directory / INDEX_NAME).read_text())["weight_map"] == ckpt.shard_of
    else:
        assert files == ["model.safetensors"] and not plan.indexed
    schemas = [plan.schema] + ([plan.duplicate] if plan.duplicate else [])
    suffixes = tuple(f.suffix for f in formats_of(plan.quant, plan.mode))
    spelled = [set(s.keys(plan.num_layers, plan.num_experts, suffixes if s.layout == "per_expert" else ("weight",)))
               for s in schemas]
    assert set(ckpt.others) <= set(on_disk)
    assert all(torch.equal(as_bits(on_disk[k]), as_bits(t)) for k, t in ckpt.others.items())
    for key in set(on_disk) - set(ckpt.extra):
        parts = parse_expert_key(key)
        if parts is None:
            assert key in ckpt.others and plan.schema.prefix in key, key
            continue
        assert parts.get("suffix", parts.get("fsuffix", "weight")) in suffixes
        fused_base = key.removesuffix("." + parts["fsuffix"]) if "fsuffix" in parts else key
        assert any((key if s.layout == "per_expert" else fused_base) in keys for s, keys in zip(schemas, spelled,
                                                                                                strict=True)), key
    assert all(k not in on_disk for k in ckpt.dropped)


@pytest.mark.parametrize("quant", [q for q in FORMATS if q != "none"])
def test_quantized_formats_write_their_tensors(quant: str) -> None:
    ckpt = write_checkpoint(_plan(quant=quant, num_layers=1, num_experts=2))
    with safe_open(ckpt.directory / "model.safetensors", framework="pt") as f:
        found = {k.rsplit(".", 1)[1]: f.get_tensor(k).dtype
                 for k in f.keys() if ".experts.0.gate_proj." in k}  # noqa: SIM118 - not a dict
    assert found == {f.suffix: f.dtype for f in FORMATS[quant]}
    beside = write_checkpoint(_plan(quant=quant, mode="beside", num_layers=1, num_experts=1))
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in beside.shard_of
    assert beside.expected["model.layers.0.moe.experts.gate_up_proj"].dtype == torch.float32


def test_strategy_draws_the_square_cases() -> None:
    plans = checkpoint_plans("mixtral", (PER_EXPERT,))
    assert find(plans, lambda p: p.hidden == p.intermediate).hidden >= 2
    assert find(plans, lambda p: p.hidden == 2 * p.intermediate and p.quant == "nvfp4").hidden % 16 == 0


def test_fingerprints_differ_between_slots_and_within_each() -> None:
    ckpt = write_checkpoint(_plan(dtype=torch.bfloat16, quant="fp8", mode="instead", num_experts=4))
    firsts: dict[torch.dtype, set[int]] = {}
    for _, tensor in ckpt.fingerprints.values():
        bits = as_bits(tensor).flatten()
        assert len(set(bits.tolist())) == bits.numel() or bits.numel() > 256  # 8-bit codes repeat past 256
        firsts.setdefault(tensor.dtype, set()).add(int(bits[0]))
    assert all(len(codes) == sum(t.dtype == d for _, t in ckpt.fingerprints.values()) for d, codes in firsts.items())


def test_directory_is_deleted_with_the_example() -> None:
    ckpt = write_checkpoint(_plan())
    directory = ckpt.directory
    assert directory.exists()
    del ckpt
    gc.collect()
    assert not directory.exists()


# ---- the reference loader ----------------------------------------------------------------------------

@pytest.mark.parametrize("quant", list(FORMATS))
@pytest.mark.parametrize("schema", [PER_EXPERT, FUSED, W_NAMES], ids=lambda s: s.id)
def test_reference_loader_loads_every_schema_and_format(schema: KeySchema, quant: str) -> None:
    # hidden == 2·intermediate: a transposed gate_up would have the right shape, so only values tell
    ckpt = write_checkpoint(_plan(schema=schema, quant=quant, shards=3, split="round_robin"))
    loaded = load_checkpoint(ckpt.directory, ckpt.spec)
    assert not (loaded.report.missing or loaded.report.unexpected or loaded.report.conflicts)
    for name, want in ckpt.expected.items():
        assert torch.equal(as_bits(loaded.params[name]), as_bits(want)), name
    assert set(loaded.report.loaded) == set(ckpt.shard_of)


def test_reference_loader_reports_conflicts_missing_unexpected_by_name() -> None:
    dup = write_checkpoint(_plan(duplicate=KeySchema("model.", "mlp", "fused"), duplicate_layers=(1,)))
    report = load_checkpoint(dup.directory, dup.spec).report
    assert sorted(report.conflicts) == list(dup.duplicated)
    assert "model.layers.1.mlp.experts.gate_up_proj" in report.conflicts["model.layers.1.moe.experts.gate_up_proj"]
    dropped = write_checkpoint(_plan(damage="drop", damage_at=4))
    assert dropped.dropped == ("model.layers.0.mlp.experts.1.gate_proj.weight",)
    assert load_checkpoint(dropped.directory, dropped.spec).report.missing == [
        "model.layers.0.moe.experts.1.gate_proj.weight"]
    extra = write_checkpoint(_plan(damage="extra"))
    assert load_checkpoint(extra.directory, extra.spec).report.unexpected == list(extra.extra)


# ---- bad files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", [PER_EXPERT, FUSED], ids=lambda s: s.layout)
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_raises_a_named_checkpoint_error(kind: str, schema: KeySchema) -> None:
    bad = break_checkpoint(write_checkpoint(_plan(schema=schema, shards=2)), kind)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad.checkpoint.directory, bad.checkpoint.spec)
    message = str(info.value)
    assert bad.file in message or (kind == "missing_shard" and INDEX_NAME in message and bad.file in message)
    if bad.key:
        assert bad.key in message
    assert info.value.advice and message.endswith(info.value.advice + "."), message


def test_bad_files_become_classified_verdicts_and_the_run_goes_on() -> None:
    reference = make_target()
    family = get_family("mixtral")
    for kind in BAD_KINDS:
        check = dataclasses.replace(CHECKPOINT_ROUNDTRIP, draws=lambda t, f, kind=kind: bad_checkpoints(
            kind, f.name, (PER_EXPERT, W_NAMES)).map(lambda bad: bad.checkpoint))
        verdict = run_case(check, reference, family, max_examples=2)
        assert (verdict.status, verdict.kind) == (Status.FAIL, ErrorKind.TARGET_ERROR), (kind, verdict.message)
        assert "CheckpointError" in verdict.message and ".safetensors" in verdict.message, verdict.message
    assert run_case(CHECKPOINT_ROUNDTRIP, reference, family, max_examples=5).status == Status.PASS


# ---- broken loaders ----------------------------------------------------------------------------------

def _experts_off_by_one(*args: object, **kwargs: object) -> list[ExpertParamEntry]:
    """Physical slot e loads checkpoint expert e+1 (mod E): experts rotated by one."""
    rows = make_expert_params_mapping(*args, **kwargs)  # type: ignore[arg-type]
    count = len(rows) // 3
    return [dataclasses.replace(r, expert_id=(r.expert_id - 1) % count) for r in rows]


def _transposes_fused(directory, spec):  # type: ignore[no-untyped-def]
    """Treats fused gate_up as [E, H, 2I] (llama4's layout) in a family stored [E, 2I, H]."""
    loaded = load_checkpoint(directory, spec)
    for name, tensor in loaded.params.items():
        if name.endswith("gate_up_proj") and tensor.shape[-1] == tensor.shape[-2]:
            loaded.params[name] = tensor.transpose(-1, -2).contiguous()
    return loaded


BROKEN_LOADERS = {
    "experts-off-by-one": functools.partial(load_checkpoint, mapping_fn=_experts_off_by_one),
    "transposed-fused": _transposes_fused,
}


@pytest.mark.parametrize("name", BROKEN_LOADERS)
def test_check_catches_broken_loader(name: str) -> None:
    cap = CheckpointLoaderCap(BROKEN_LOADERS[name], lambda family: (PER_EXPERT, FUSED), formats=None)
    target = dataclasses.replace(make_target(), name="broken", known_failures=[], checkpoint_loader=cap)
    verdict = run_case(CHECKPOINT_ROUNDTRIP, target, get_family("qwen3_moe"), max_examples=60)
    assert (verdict.status, verdict.kind) == (Status.FAIL, ErrorKind.PROPERTY_VIOLATION), verdict.message
    assert {"schema", "hidden", "intermediate", "parameter", "expected", "found"} <= set(verdict.counterexample)


# ---- transformers from_pretrained ---------------------------------------------------------------------

TRANSFORMERS = Target(name="transformers-loader", version="", description="from_pretrained",
                      checkpoint_loader=CHECKPOINT_LOADER)
TF_FAMILIES = ("qwen3_moe", "mixtral", "olmoe")
# Families with no schema record: their layouts are derived from their own models (a multimodal base model's
# `language_model.` names, gemma4's experts on the layer, deepseek_v4's legacy `ffn.experts.N.w1`).
TF_DERIVED = ("qwen3_vl_moe", "gemma4", "deepseek_v4")


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
@pytest.mark.parametrize("family", TF_FAMILIES)
def test_transformers_loads_full_checkpoint_and_resaves_exactly(family: str, layout: str) -> None:
    schema = next(s for s in record(family).checkpoint_schemas if s.layout == layout and s.prefix == "model.")
    ckpt = write_full_checkpoint(_plan(family=family, schema=schema, hidden=16, intermediate=8, shards=2,
                                       dtype=torch.bfloat16))
    CHECKPOINT_ROUNDTRIP.prop(TRANSFORMERS, get_family(family), ckpt)
    first, second = resave(ckpt.directory)
    assert first.keys() == second.keys()
    assert [k for k in first if not torch.equal(as_bits(first[k]), as_bits(second[k]))] == []


@pytest.mark.parametrize("family", TF_FAMILIES + TF_DERIVED)
def test_transformers_passes_the_check_without_two_layout_checkpoints(family: str) -> None:
    check = dataclasses.replace(CHECKPOINT_ROUNDTRIP, draws=lambda t, f: checkpoint_plans(
        f.name, CHECKPOINT_LOADER.schemas(f.name), formats=("none",), duplicates=False).map(write_checkpoint))
    verdict = run_case(check, TRANSFORMERS, get_family(family), max_examples=12)
    assert verdict.status == Status.PASS, verdict.message


def test_transformers_two_layout_checkpoint_is_rejected_without_naming_a_key() -> None:
    """transformers 5.23: one layer held per-expert and fused -> AttributeError naming no key (a finding)."""
    plan = _plan(family="qwen3_moe", num_layers=1, num_experts=2, hidden=4, intermediate=2,
                 duplicate=KeySchema("model.", "mlp", "fused"), duplicate_layers=(0,))
    check = dataclasses.replace(CHECKPOINT_ROUNDTRIP, draws=lambda t, f: checkpoint_plans(
        f.name, (plan.schema,), formats=("none",), damage=("none",)).map(
        lambda p: write_checkpoint(dataclasses.replace(p, duplicate=plan.duplicate, duplicate_layers=(0,)))))
    verdict = run_case(check, TRANSFORMERS, get_family("qwen3_moe"), max_examples=3)
    assert (verdict.status, verdict.kind) == (Status.FAIL, ErrorKind.PROPERTY_VIOLATION), verdict.message
    assert "AttributeError" in verdict.counterexample["error"]


def test_transformers_twin_spelling_is_loaded_silently() -> None:
    """transformers 5.24: the same expert parameter under `model.layers.0...` and `layers.0...` loads one copy
    and reports neither (the recorded `family = "*"` finding); the check fails on it."""
    plan = _plan(family="qwen3_moe", num_layers=1, num_experts=2, hidden=4, intermediate=2,
                 schema=KeySchema("model.", "mlp", "fused"), duplicate=KeySchema("", "mlp", "fused"),
                 duplicate_layers=(0,))
    with pytest.raises(PropertyViolation, match="neither rejected nor reported as a conflict"):
        CHECKPOINT_ROUNDTRIP.prop(TRANSFORMERS, get_family("qwen3_moe"), write_checkpoint(plan))


def test_a_load_report_naming_layers_in_braces_names_each_layer() -> None:
    """transformers' load report compresses `layers.0.x` and `layers.1.x` to `layers.{0, 1}.x`: that names both."""
    from harness.checks.checkpoint_roundtrip import _cited_names

    assert _cited_names("model.layers.{0, 1}.mlp.experts.down_proj | MISMATCH") == [
        "model.layers.0.mlp.experts.down_proj", "model.layers.1.mlp.experts.down_proj", "MISMATCH"]
    assert len(_cited_names("model.layers.{0...11}.mlp.experts.down_proj")) == 12  # over ten: first...last
