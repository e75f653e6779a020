"""torchtitan's transformers backend, swapping its own MoE in for a transformers MoE block: the module it builds
(`_probe_hf_moe_block` / `_probe_layer_level_moe` -> `_build_moe_config` -> build -> `init_states`, as
`build_and_swap_native_moe` does), holding the block's weights as its converter (`hf_to_titan_moe_state_dict`)
renames and splits them, loaded strictly: a weight the converter leaves out or misnames is the target's error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Where the block's tensors sit in a checkpoint: under its decoder layer, which the converter's patterns need
# (they match a leading dot).
LAYER = "model.layers.0."
# Tensors of the swapped-in MoE that no Hugging Face block holds, which torchtitan initialises itself: the
# load-balancing expert bias (persistent, zeros: no effect on which experts are picked until training moves it).
# Every other tensor must come from the block, and every tensor of the block must land on one.
ENGINE_STATE = {"expert_bias_E": "the load-balancing bias torchtitan adds for training, zeros at the start"}


class ConversionMismatch(RuntimeError):
    """The converted block does not fill the swapped-in MoE exactly: tensors left over, parameters left empty."""


class SwappedMoE(nn.Module):
    """torchtitan's MoE as x [T, H] -> [T, H], plus what the decoder layer adds beside the block it replaced
    (granite's shared MLP: the layer's own module, left in place by the swap)."""

    def __init__(self, moe: nn.Module, layer_shared: nn.Module | None) -> None:
        super().__init__()
        self.moe, self.layer_shared = moe, layer_shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.moe(x[None])[0]
        return out if self.layer_shared is None else out + self.layer_shared(x)


def route(swapped: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The swapped-in MoE's own router on x [T, H], with the expert bias its forward passes: (weights, ids) [T, K]."""
    moe: Any = swapped.moe
    weights, ids, _ = moe.router(x[None], moe.expert_bias_E)
    return weights[0], ids[0]


def moe_attribute(block: Any) -> str:
    """The decoder-layer attribute the backend puts its MoE at, for a transformers target block."""
    from torchtitan.experiments.transformers_modeling_backend import moe_replacement as backend

    from harness.targets.transformers.blocks import decoder_layer, find_block

    # gemma4: router and experts are the decoder layer's own children, beside its dense mlp
    layer = find_block(block.family) if block.on_layer else decoder_layer(block.family)
    return backend._get_moe_attr_name(layer)  # type: ignore[no-any-return]


def block_checkpoint(block: Any) -> dict[str, torch.Tensor]:
    """The block's tensors as the family's checkpoints hold them, under its decoder layer (a layer-level MoE's on
    the layer, gemma4's router and experts)."""
    from harness.targets.transformers.blocks import block_attribute

    at = LAYER if block.on_layer else f"{LAYER}{block_attribute(block.family)}."
    return {at + k: v for k, v in block.moe.state_dict().items()}


def swap(block: Any, config: Any) -> nn.Module:
    """The torchtitan MoE the backend builds in place of `block` (a RealMoEBlock), with the block's weights."""
    from torchtitan.experiments.transformers_modeling_backend import moe_replacement as backend
    from torchtitan.experiments.transformers_modeling_backend.state_dict_adapter import (
        hf_to_titan_moe_state_dict,
    )

    mlp = moe_attribute(block)
    if block.on_layer:
        params = backend._probe_layer_level_moe(block.moe, config)
    else:
        params = backend._probe_hf_moe_block(block.moe, config)
    moe = backend._build_moe_config(params, config).build()
    moe.init_states(buffer_device=torch.device("cpu"))
    moe.__class__ = backend._HFContiguousMoE  # as build_and_swap_native_moe does
    moe.eval()
    converted = hf_to_titan_moe_state_dict(block_checkpoint(block))
    # The swapped-in module sits where the block's mlp was: its tensors are the converted keys under that name.
    own = {k.removeprefix(f"{LAYER}{mlp}."): v for k, v in converted.items()}
    try:
        missing, unexpected = moe.load_state_dict(own, strict=False)
    except RuntimeError as exc:  # a shape that does not fit: the converter or the probe read the layout wrong
        raise ConversionMismatch(str(exc)) from exc
    left = [k for k in missing if k not in ENGINE_STATE]
    if unexpected or left:
        raise ConversionMismatch(f"the block's converted tensors do not fill torchtitan's MoE: left over (no parameter "
                                 f"takes them) {sorted(unexpected)}; never filled {sorted(left)}")
    return SwappedMoE(moe, block.layer_shared)
