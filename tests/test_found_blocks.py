"""An engine's MoE block found in a built model (`harness/targets/found_blocks.py`): tensors mapped onto the
reference's names from any of their names, strict both ways, and copies that own their tensors. Engine-shaped modules
built from torch alone, so these run in the main environment."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.families import get_family
from harness.targets.found_blocks import FoundMoE, MissingTensors, UnmappedBlock, copies, find_block

SPEC = get_family("mixtral").spec  # H 32, E 8, I 16, gated: gate.weight, experts.gate_up_proj, experts.down_proj
EXPERT_NAMES = {"routed.w13_weight": "{first}", "routed.w2_weight": "down_proj"}


class _Routed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        e, h, i = SPEC.num_experts, SPEC.hidden_size, SPEC.intermediate_size
        self.w13_weight = nn.Parameter(torch.randn(e, 2 * i, h))
        self.w2_weight = nn.Parameter(torch.randn(e, h, i))


class _Runner(nn.Module):
    """An engine's experts runner that holds the block's router again, as vLLM's MoERunner does."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate
        self.routed = _Routed()


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.experts = _Runner(nn.Linear(SPEC.hidden_size, SPEC.num_experts, bias=False))
        self.gate = self.experts.gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Layer(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.mlp = block


def _model(block: nn.Module) -> nn.Module:
    model = nn.Module()
    model.layers = nn.ModuleList([_Layer(block)])
    return model


def _find(block: nn.Module):
    return find_block(SPEC, _model(block), lambda experts: isinstance(experts, _Runner), EXPERT_NAMES)


def test_every_tensor_maps_from_any_of_its_names() -> None:
    """The router, registered first under the runner, maps from its other name (`gate.weight`)."""
    block = _Block()
    found = _find(block)
    assert found.block is block
    assert found.names == {"block.experts.gate.weight": "gate.weight", "block.experts.routed.w13_weight":
                           "experts.gate_up_proj", "block.experts.routed.w2_weight": "experts.down_proj"}
    state = FoundMoE(found, block, None).reference_state()
    assert torch.equal(state["experts.gate_up_proj"], block.experts.routed.w13_weight)


def test_a_tensor_without_a_slot_is_unmapped() -> None:
    block = _Block()
    block.balancing_bias = nn.Parameter(torch.zeros(SPEC.num_experts))
    with pytest.raises(UnmappedBlock, match="no slot in the reference block: block.balancing_bias"):
        _find(block)


def test_a_reference_tensor_the_block_lacks_is_the_engines_error() -> None:
    """Not a harness limit: the block drops what the family's checkpoints hold."""
    block = _Block()
    del block.experts.routed.w2_weight
    with pytest.raises(MissingTensors, match="holds nothing for the reference's experts.down_proj"):
        _find(block)


def test_a_block_whose_forward_needs_more_than_hidden_states_is_unmapped() -> None:
    class NeedsResidual(_Block):
        def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return x + residual

    with pytest.raises(UnmappedBlock, match="needs more than hidden states \\(residual"):
        _find(NeedsResidual())


def test_copies_own_their_tensors_and_keep_their_aliases() -> None:
    found = _find(_Block())
    block, shared, norm = copies(found)
    assert shared is None and norm is None
    assert block.gate is block.experts.gate  # one module under two names, as in the original
    assert block.gate.weight is not found.block.gate.weight
    assert torch.equal(block.gate.weight, found.block.gate.weight)
