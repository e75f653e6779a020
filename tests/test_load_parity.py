"""load-parity's judge on hand-made loads of a small fingerprinted checkpoint: a faithful load passes, and each way a
loader can misplace a tensor is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.checks.load_parity import judge
from harness.strategies.fingerprints import (
    FIRST_FINGERPRINT,
    Fingerprints,
    TooManyElements,
    fingerprint_checkpoint,
)
from harness.targets.base import LoadedParams

E, INTER, H = 4, 3, 2  # experts, intermediate, hidden
PARTS = (("w13", (("w1", "gate_proj"), ("w3", "up_proj"))),)


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Fingerprints, dict[str, torch.Tensor]]:
    """Per-expert gate/up/down of layer 0, a router and a norm, fingerprinted; with the tensors as written."""
    tensors = {f"model.layers.0.mlp.experts.{e}.{w}.weight": torch.zeros(shape) for e in range(E)
               for w, shape in (("w1", (INTER, H)), ("w3", (INTER, H)), ("w2", (H, INTER)))}
    tensors |= {"model.layers.0.mlp.gate.weight": torch.zeros(E, H), "model.norm.weight": torch.zeros(H)}
    save_file(tensors, tmp_path / "model.safetensors")
    prints = fingerprint_checkpoint(tmp_path, seed=3)
    return prints, load_file(tmp_path / "model.safetensors")


def _faithful(written: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a correct vLLM-style loader makes of it: w13 [E, 2I, H] (gate rows first), w2 [E, H, I]."""
    expert = "model.layers.0.mlp.experts.{}.{}.weight"
    return {
        "model.layers.0.mlp.experts.w13": torch.stack([torch.cat([written[expert.format(e, "w1")],
                                                                  written[expert.format(e, "w3")]]) for e in range(E)]),
        "model.layers.0.mlp.experts.w2": torch.stack([written[expert.format(e, "w2")] for e in range(E)]),
        "model.layers.0.mlp.gate.weight": written["model.layers.0.mlp.gate.weight"].clone(),
        "model.norm.weight": written["model.norm.weight"].clone(),
    }


def _judge(checkpoint, params: dict[str, torch.Tensor], **kw) -> list[str]:
    prints, _ = checkpoint
    experts = {n: tuple(range(E)) for n in params if n.endswith(("w13", "w2"))}
    return judge(prints, (LoadedParams(params, experts, **kw),), PARTS)


def test_fingerprints_number_every_element_once_from_the_first(checkpoint) -> None:
    prints, written = checkpoint
    values = torch.cat([t.reshape(-1) for t in written.values()]).double()
    assert sorted(values.tolist()) == list(range(FIRST_FINGERPRINT, FIRST_FINGERPRINT + prints.count))
    key = "model.norm.weight"
    assert prints.key_of(int(written[key][1]) - FIRST_FINGERPRINT) == (key, 1)


def test_a_checkpoint_too_large_for_exact_float32_fingerprints_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2**24)}, tmp_path / "model.safetensors")
    with pytest.raises(TooManyElements):
        fingerprint_checkpoint(tmp_path, seed=0)


def test_a_faithful_load_passes(checkpoint) -> None:
    assert _judge(checkpoint, _faithful(checkpoint[1])) == []


def test_experts_stacked_out_of_order_are_named(checkpoint) -> None:
    params = _faithful(checkpoint[1])
    params["model.layers.0.mlp.experts.w2"][[0, 1]] = params["model.layers.0.mlp.experts.w2"][[1, 0]].clone()
    problems = _judge(checkpoint, params)
    assert any("row 0 is expert 0 (the engine's expert map) but holds expert 1" in p for p in problems), problems


def test_up_stacked_before_gate_is_named(checkpoint) -> None:
    params = _faithful(checkpoint[1])
    w13 = params["model.layers.0.mlp.experts.w13"]
    params["model.layers.0.mlp.experts.w13"] = torch.cat(w13.chunk(2, dim=1)[::-1], dim=1)
    assert any("stacks ['w3', 'w1'] where the declared order is ['w1', 'w3']" in p for p in _judge(checkpoint, params))


def test_a_reshape_instead_of_a_transpose_is_named(checkpoint) -> None:
    params = _faithful(checkpoint[1])
    w2 = params["model.layers.0.mlp.experts.w2"]
    params["model.layers.0.mlp.experts.w2"] = w2.transpose(1, 2).reshape(w2.shape)
    assert any("rearranged, not a slice" in p for p in _judge(checkpoint, params))


def test_unwritten_foreign_twice_and_dropped_are_each_named(checkpoint) -> None:
    params = _faithful(checkpoint[1])
    params["model.norm.weight"].fill_(float("nan"))  # never written, and its key loaded nowhere
    params["model.layers.0.mlp.gate.weight"][0, 0] = 0.5  # no checkpoint value
    params["model.layers.0.mlp.experts.w2"][1] = params["model.layers.0.mlp.experts.w2"][0]  # expert 0 twice
    problems = "\n".join(_judge(checkpoint, params))
    for expected in ("model.norm.weight (2,): 2 of 2 elements never written", "hold values no checkpoint tensor holds",
                     "experts.0.w2.weight: 6 element(s) loaded more than once",
                     "experts.1.w2.weight: 6 of 6 elements loaded into no parameter",
                     "model.norm.weight: 2 of 2 elements loaded into no parameter"):
        assert expected in problems, problems


def test_a_tensor_of_another_layer_is_named(tmp_path: Path) -> None:
    save_file({f"model.layers.{i}.norm.weight": torch.zeros(2) for i in (0, 1)}, tmp_path / "model.safetensors")
    prints = fingerprint_checkpoint(tmp_path, seed=0)
    written = load_file(tmp_path / "model.safetensors")
    swapped = {"model.layers.0.norm.weight": written["model.layers.1.norm.weight"],
               "model.layers.1.norm.weight": written["model.layers.0.norm.weight"]}
    problems = judge(prints, (LoadedParams(swapped, {}),))
    assert "model.layers.0.norm.weight (layer 0) holds model.layers.1.norm.weight (layer 1)" in problems


def test_declared_derived_reordered_and_unused_tensors_pass_and_nothing_else(checkpoint) -> None:
    params = _faithful(checkpoint[1])
    params["model.norm.weight"] = -params["model.norm.weight"].exp()  # computed from its key
    params["model.layers.0.mlp.gate.weight"] = params["model.layers.0.mlp.gate.weight"][[1, 0, 3, 2]]  # rows permuted
    declared = {"derived": {"model.norm.weight": "model.norm.weight"},
                "reordered": {"model.layers.0.mlp.gate.weight": "rows permuted on purpose"}}
    assert _judge(checkpoint, params, **declared) == []
    assert _judge(checkpoint, params) != []
    del params["model.norm.weight"]
    assert _judge(checkpoint, params, unused={"model.norm.weight": "never read"},
                  reordered=declared["reordered"]) == []


def test_a_rank_holding_zeros_on_purpose_passes_where_another_rank_holds_the_slice(checkpoint) -> None:
    """Two ranks: rank 1 holds the router as zeros, declared (a bias added once across ranks, say); any nonzero
    element there is named, and so is a zeroed tensor no rank holds."""
    prints, written = checkpoint
    experts = {n: tuple(range(E)) for n in _faithful(written) if n.endswith(("w13", "w2"))}
    gate = "model.layers.0.mlp.gate.weight"
    rank0 = LoadedParams(_faithful(written), experts)
    zeros = {**_faithful(written), gate: torch.zeros(E, H)}
    # rank 1 holds the other tensors too: the same elements on two ranks are "loaded twice" only within one rank
    rank1 = LoadedParams(zeros, experts, rank=1, zeroed={gate: "added once, on rank 0"})
    assert judge(prints, (rank0, rank1), PARTS) == []
    stray = LoadedParams({**zeros, gate: torch.ones(E, H)}, experts, rank=1, zeroed={gate: "added once, on rank 0"})
    assert f"rank 1: {gate} should hold zeros on this rank (added once, on rank 0) but holds 8 nonzero elements" in \
        judge(prints, (rank0, stray), PARTS)
    alone = LoadedParams(zeros, experts, zeroed={gate: "added once, on rank 0"})
    assert any(p.startswith(f"{gate}: 8 of 8 elements loaded into no parameter") for p in judge(prints, (alone,), PARTS))


def _mapping(gate: str = "w1", up: str = "w3", down: str = "w2", ids: tuple[int, ...] = tuple(range(E)),
             shards: tuple[str, str] = ("w1", "w3")) -> tuple[tuple[str, str, int, str], ...]:
    """An expert params mapping as vLLM declares one: expert `e`'s checkpoint names point at the expert `ids[e]`."""
    return tuple(entry for e in range(E) for entry in (
        ("experts.w13_", f"experts.{e}.{gate}.", ids[e], shards[0]),
        ("experts.w13_", f"experts.{e}.{up}.", ids[e], shards[1]),
        ("experts.w2_", f"experts.{e}.{down}.", ids[e], "w2")))


def _judge_mapping(checkpoint, mapping: tuple[tuple[str, str, int, str], ...]) -> list[str]:
    """The faithful load, its parameters named as vLLM names them (w13_weight), with `mapping` declared."""
    prints, written = checkpoint
    params = {n.replace("experts.w13", "experts.w13_weight").replace("experts.w2", "experts.w2_weight"): t
              for n, t in _faithful(written).items()}
    experts = {n: tuple(range(E)) for n in params if "experts.w" in n}
    parts = (("w13_weight", PARTS[0][1]),)
    return judge(prints, (LoadedParams(params, experts, expert_mapping=mapping),), parts)


def test_a_declared_mapping_that_agrees_with_the_load_passes(checkpoint) -> None:
    assert _judge_mapping(checkpoint, _mapping()) == []


def test_a_declared_mapping_naming_other_experts_than_the_load_is_named(checkpoint) -> None:
    problems = _judge_mapping(checkpoint, _mapping(ids=(1, 0, 2, 3)))
    assert any(p.startswith("model.layers.0.mlp.experts.0.w1.weight: get_expert_mapping() says 'experts.0.w1.' -> "
                            "'experts.w13_', expert 1, shard w1, but loading put it in "
                            "model.layers.0.mlp.experts.w13_weight row 0 part 0") for p in problems), problems


def test_a_declared_mapping_with_gate_and_up_swapped_is_named(checkpoint) -> None:
    problems = _judge_mapping(checkpoint, _mapping(shards=("w3", "w1")))
    assert any("experts.0.w1.weight: get_expert_mapping() says 'experts.0.w1.' -> 'experts.w13_', expert 0, shard w3"
               in p for p in problems), problems


def test_a_declared_mapping_for_another_checkpoint_layout_is_named(checkpoint) -> None:
    problems = _judge_mapping(checkpoint, _mapping("gate_proj", "up_proj", "down_proj"))
    assert problems == ["get_expert_mapping() names no key of the checkpoint (its weight names: ['experts.0.down_proj.',"
                        " 'experts.0.gate_proj.', 'experts.0.up_proj.']..., the checkpoint's: "
                        "['model.layers.0.mlp.experts.0.w1.weight', 'model.layers.0.mlp.experts.0.w2.weight', "
                        "'model.layers.0.mlp.experts.0.w3.weight']...)"], problems


def test_held_tensors_keeps_packed_slices_and_drops_a_reshaped_view() -> None:
    """Experts packed into one flat tensor (each parameter a slice of it) are each held; a reshape of a parameter
    (a Mamba mixer's conv_weights of its conv1d.weight) is that parameter, held once."""
    from harness.targets.loaded import held_tensors

    model = torch.nn.Module()
    packed = torch.arange(8.0)
    model.a = torch.nn.Parameter(packed[:4])
    model.b = torch.nn.Parameter(packed[4:])
    model.conv = torch.nn.Parameter(torch.ones(2, 1, 3))
    model.conv_view = torch.nn.Parameter(model.conv.data.view(2, 3))
    params, _ = held_tensors(model)
    assert sorted(params) == ["a", "b", "conv"]
    assert params["b"].tolist() == [4.0, 5.0, 6.0, 7.0]
