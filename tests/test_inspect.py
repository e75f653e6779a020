"""`moe-harness inspect`: real safetensors checkpoints written by the harness's own generator, clean and damaged
one way each, driven through `moe-harness inspect` (exit code and the report's key phrases)."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.cli import EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, main
from harness.families import DEFAULT_FAMILIES
from harness.strategies.checkpoint_files import CheckpointPlan, GeneratedCheckpoint, write_checkpoint
from harness.strategies.checkpoints import break_checkpoint
from reference.checkpoint import KeySchema
from reference.shards import INDEX_NAME

MIXTRAL = DEFAULT_FAMILIES["mixtral"].schema  # model.|block_sparse_moe|per_expert|w
QWEN3_FUSED = KeySchema("model.", "mlp", "fused")


def _plan(family: str = "mixtral", schema: KeySchema = MIXTRAL, **changes: object) -> CheckpointPlan:
    plan = CheckpointPlan(family=family, schema=schema, num_layers=2, num_experts=4, hidden=16, intermediate=8,
                          shards=2, neighbours=("router", "norms"))
    return replace(plan, **changes)  # type: ignore[arg-type]


def _write(tmp_path: Path, plan: CheckpointPlan | None = None) -> GeneratedCheckpoint:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    return write_checkpoint(plan or _plan(), directory)


def inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`moe-harness inspect ARGV...` through the CLI; (exit code, stdout + stderr)."""
    code = main(["inspect", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def _first_expert_key(ckpt: GeneratedCheckpoint) -> str:
    return next(k for k in ckpt.shard_of if ".experts." in k)


# ---- clean checkpoints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", [
    _plan(),  # per-expert w1/w3/w2, two shards and an index
    _plan("qwen3_moe", QWEN3_FUSED, shards=1, dtype=torch.bfloat16),  # fused, one model.safetensors
    _plan("qwen3_moe", KeySchema("model.", "mlp"), quant="fp8", shards=3),  # fp8 weights with their scales
], ids=["mixtral-per-expert", "qwen3_moe-fused-bf16", "qwen3_moe-fp8"])
def test_clean_checkpoint_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str], plan: CheckpointPlan) -> None:
    ckpt = _write(tmp_path, plan)
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_OK, out
    assert f"loads cleanly as {plan.family}: 4 experts × 2 MoE layers" in out.splitlines()[-1]
    assert "(the family's released layout)" in out or plan.schema == QWEN3_FUSED
    if plan.quant == "fp8":
        assert "suffixes weight_scale ×24" in out and "quant_method=fp8" in out and "F8_E4M3 ×24" in out


def test_family_flag_overrides_model_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path)
    code, out = inspect(capsys, str(ckpt.directory), "--family", "qwen3_moe")
    assert code == EXIT_OK, out
    assert "qwen3_moe (--family; config.json's model_type is 'mixtral')" in out
    assert "released checkpoints use model.|mlp|per_expert|proj" in out


# ---- damaged keys -----------------------------------------------------------------------------------------------


def test_missing_expert_tensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path, _plan(damage="drop", damage_at=5))
    (dropped,) = ckpt.dropped
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert "missing: expert slots no key fills (1):" in out
    assert f"layer 0 expert 1  {dropped}: no key fills this slot" in out  # the checkpoint's own spelling
    assert "(missing ×1)" in out.splitlines()[-1]


def test_unexpected_expert_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path, _plan(damage="extra"))
    (extra,) = ckpt.extra
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert "unexpected: expert keys no slot takes (1):" in out
    assert f"layer 0 expert 4  {extra}: expert 4 is beyond the config's 4 experts (0-3)" in out


def test_slot_in_two_layouts_conflicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fused = KeySchema("model.", "block_sparse_moe", "fused")
    ckpt = _write(tmp_path, _plan(duplicate=fused, duplicate_layers=(1,)))
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert "conflicting: one parameter claimed by two layouts or spellings (2):" in out
    assert "layer 1  model.layers.1.moe.experts.gate_up_proj: claimed by 2 layouts/spellings at once" in out
    assert f"{fused.id} (1 key, e.g. model.layers.1.block_sparse_moe.experts.gate_up_proj)" in out
    assert f"{MIXTRAL.id} (8 keys, e.g. model.layers.1.block_sparse_moe.experts.0.w1.weight)" in out
    assert "missing" not in out and "unexpected" not in out


def test_mis_shaped_expert_tensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path, _plan(shards=1))
    shard = ckpt.directory / "model.safetensors"
    tensors = load_file(shard)
    key = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
    tensors[key] = torch.zeros(8, 17)  # the config's [I, H] is [8, 16]
    tensors["model.layers.0.block_sparse_moe.experts.3.w2.weight"] = torch.zeros(16, 8, dtype=torch.float16)
    save_file(tensors, shard)
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert f"layer 1 expert 2  {key}: [8, 17], the config needs [8, 16]" in out
    assert "layer 0 expert 3  model.layers.0.block_sparse_moe.experts.3.w2.weight: F16, while 23 other expert " \
           ".weight tensors are F32" in out
    # The loader checked every other key: the two slots are reported once each, not also as missing.
    assert "(mis-shaped ×1, dtype ×1)" in out.splitlines()[-1]


def test_quantization_piece_unlike_its_siblings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path, _plan("qwen3_moe", KeySchema("model.", "mlp"), quant="fp8", shards=1))
    shard = ckpt.directory / "model.safetensors"
    tensors = load_file(shard)
    key = "model.layers.0.mlp.experts.2.up_proj.weight_scale"
    tensors[key] = tensors[key].reshape(1)  # the format's scale is one 0-d number per projection
    save_file(tensors, shard)
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert f"layer 0 expert 2  {key}: [1], while 7 other pieces of layer 0 gate_up_proj.weight_scale are []" in out
    assert "(mis-shaped ×1)" in out.splitlines()[-1]


def test_whole_config_mismatch_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path, _plan("qwen3_moe", QWEN3_FUSED))
    config = json.loads((ckpt.directory / "config.json").read_text())
    (ckpt.directory / "config.json").write_text(json.dumps({**config, "hidden_size": 24}))
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert "experts.gate_up_proj: [4, 16, 16], the config needs [4, 16, 24]" in out
    assert "router [4, 16], the config needs [4, 24]" in out
    assert "every plain expert tensor disagrees with the config" in out


# ---- shards and the index ---------------------------------------------------------------------------------------


def test_shard_named_by_index_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = break_checkpoint(_write(tmp_path), "missing_shard")
    code, out = inspect(capsys, str(bad.checkpoint.directory))
    assert code == EXIT_VIOLATION, out
    assert f"{bad.file}: {INDEX_NAME} names this shard for" in out and "but it does not exist" in out
    assert "missing, unexpected and conflicting keys were not checked" in out


def _edit_index(directory: Path, edit: object) -> None:
    path = directory / INDEX_NAME
    index = json.loads(path.read_text())
    edit(index["weight_map"])  # type: ignore[operator]
    path.write_text(json.dumps(index))


def test_index_and_shards_disagree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path)
    key = _first_expert_key(ckpt)
    other = next(name for name in set(ckpt.shard_of.values()) if name != ckpt.shard_of[key])
    unlisted = "model.norm.weight" if "model.norm.weight" in ckpt.shard_of else list(ckpt.shard_of)[-1]
    _edit_index(ckpt.directory, lambda m: (m.update({key: other}), m.pop(unlisted)))
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert f"{key}: {INDEX_NAME} puts it in {other}, which lacks it (it is in {ckpt.shard_of[key]})" in out
    assert f"{unlisted}: {ckpt.shard_of[unlisted]} holds it but {INDEX_NAME} does not list it" in out


# ---- unreadable files -------------------------------------------------------------------------------------------


def test_git_lfs_pointer_in_place_of_a_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path)
    (tmp_path / ".git").mkdir()  # the checkpoint sits in a clone
    name = sorted(set(ckpt.shard_of.values()))[0]
    (ckpt.directory / name).write_text("version https://git-lfs.github.com/spec/v1\n"
                                       f"oid sha256:{'ab' * 32}\nsize 123456\n")
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_VIOLATION, out
    assert f"{name}: a Git LFS pointer" in out and "123456 bytes of content not fetched" in out
    assert f"Run `git lfs pull` in {tmp_path.resolve()}" in out
    assert "Traceback" not in out


def test_truncated_shard_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = break_checkpoint(_write(tmp_path), "truncated")
    code, out = inspect(capsys, str(bad.checkpoint.directory))
    assert code == EXIT_VIOLATION, out
    assert f"files the loader cannot read (1):\n  {bad.file}: truncated: the header needs" in out
    assert "The download or copy was cut short" in out


def test_pickle_only_directory_is_never_unpickled(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    sentinel = tmp_path / "unpickled"

    class Trap:  # unpickling this creates the sentinel file
        def __reduce__(self) -> tuple[object, tuple[Path]]:
            return Path.touch, (sentinel,)

    (directory / "pytorch_model.bin").write_bytes(pickle.dumps({"model.layers.0.mlp.gate.weight": Trap()}))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("inspect unpickled a file")

    monkeypatch.setattr(torch, "load", refuse)
    code, out = inspect(capsys, str(directory))
    assert code == EXIT_VIOLATION, out
    assert "pytorch_model.bin: PyTorch pickle weights only, no safetensors: moe-harness never unpickles" in out
    assert "safe_serialization=True" in out
    assert not sentinel.exists()


# ---- usage errors -----------------------------------------------------------------------------------------------


def test_path_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path, _plan(shards=1))
    code, out = inspect(capsys, str(ckpt.directory / "model.safetensors"))
    assert code == EXIT_USAGE
    assert "is a file, not a checkpoint directory; pass the directory that holds" in out
    assert f"({ckpt.directory})" in out


def test_path_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = inspect(capsys, str(tmp_path / "nowhere"))
    assert code == EXIT_USAGE
    assert f"{tmp_path / 'nowhere'} does not exist" in out


def test_unknown_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path)
    code, out = inspect(capsys, str(ckpt.directory), "--family", "mixtrall")
    assert code == EXIT_USAGE
    assert "unknown family 'mixtrall' (from --family)" in out and "Did you mean 'mixtral'" in out
    assert "Valid families" in out and "qwen3_moe" in out


def test_unreadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _write(tmp_path)
    (ckpt.directory / "config.json").write_text('{"model_type": "mixtral",')
    code, out = inspect(capsys, str(ckpt.directory))
    assert code == EXIT_USAGE
    assert "config.json cannot be read as JSON (JSONDecodeError" in out and "Traceback" not in out
