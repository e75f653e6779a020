"""Parity of the reference routing with the real transformers routers, one family per variant.

Each family's tiny model is built once; hidden states are drawn by Hypothesis; the real router's picks
must be a valid top-K of the reference's selection score, and its weights equal the reference's
weights for those picks (float32 arithmetic on both sides).
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.checks.routing_parity import assert_valid_selection
from harness.families import tiny_config, tiny_spec
from harness.tolerances import Tolerance, assert_close
from reference.routing import selection_scores, weights_for

# family -> (MoE block path in the model, router attribute of the block)
PARITY_FAMILIES = {
    "mixtral": ("model.layers.0.mlp", "gate"),
    "qwen3_moe": ("model.layers.0.mlp", "gate"),
    "olmoe": ("model.layers.0.mlp", "gate"),
    "qwen2_moe": ("model.layers.0.mlp", "gate"),
    "gpt_oss": ("model.layers.0.mlp", "router"),
    "granitemoe": ("model.layers.0.block_sparse_moe", "router"),
    "deepseek_v3": ("model.layers.0.mlp", "gate"),
    "minimax_m2": ("model.layers.0.mlp", "gate"),
    "llama4_text": ("model.layers.0.feed_forward", "router"),
    "gemma4_text": ("model.layers.0", "router"),
}
TOL = Tolerance(1e-5, 1e-6)


@functools.cache
def _block(family: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    overrides = {"enable_moe_block": True} if family.startswith("gemma4") else {}
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides))
    model.eval()
    block = model.get_submodule(PARITY_FAMILIES[family][0])
    with torch.no_grad():
        # Non-zero selection biases and per-expert scales, so the knobs they drive are exercised.
        for name, tensor in list(block.named_buffers()) + list(block.named_parameters()):
            if name.endswith(("e_score_correction_bias", "per_expert_scale")):
                tensor.copy_(torch.rand(tensor.shape, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.1)
    return block


def _logits_and_outputs(family: str, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    block = _block(family)
    router = getattr(block, PARITY_FAMILIES[family][1])
    extra = ()
    if "e_score_correction_bias" in inspect.signature(router.forward).parameters:
        extra = (block.e_score_correction_bias,)  # minimax_m2 keeps the bias on the block
    linear = getattr(router, "proj", router)  # gemma4 scales and normalises before its projection
    captured: list[torch.Tensor] = []
    if linear is router:
        logits = torch.nn.functional.linear(x, router.weight, getattr(router, "bias", None))
        out = router(x, *extra)
    else:
        handle = linear.register_forward_hook(lambda m, i, o: captured.append(o))
        out = router(x, *extra)
        handle.remove()
        logits = captured[0]
    return logits.double(), out if isinstance(out, tuple) else (out,)


def _picks(out: tuple, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, ids) from a router's outputs: an int [T,K] ids tensor with its float [T,K] weights, or a
    dense [T,E] score matrix whose nonzero entries are the picks (llama4)."""
    ints = [t for t in out if isinstance(t, torch.Tensor) and not t.is_floating_point()]
    if ints:
        ids = ints[0]
        weights = [t for t in out if isinstance(t, torch.Tensor) and t.is_floating_point() and t.shape == ids.shape]
        return weights[0], ids
    dense = out[0]
    ids = dense.topk(k, dim=-1).indices
    return dense.gather(-1, ids), ids


@pytest.mark.parametrize("family", PARITY_FAMILIES)
@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_router_matches_reference(family: str, tokens: int, seed: int) -> None:
    spec = tiny_spec(family)
    block = _block(family)
    x = torch.randn(tokens, spec.hidden_size, generator=torch.Generator().manual_seed(seed)) * 4
    with torch.no_grad():
        logits, out = _logits_and_outputs(family, x)
    weights, ids = _picks(out, spec.top_k)
    bias = next((b for n, b in block.named_buffers() if n.endswith("e_score_correction_bias")), None)
    scale = next((p for n, p in block.named_parameters() if n.endswith("per_expert_scale")), None)
    knobs = spec.routing
    scores = selection_scores(logits, knobs, bias.double() if bias is not None else torch.zeros(spec.num_experts,
                                                                                              dtype=torch.float64))
    assert_valid_selection(scores, ids, spec.top_k)
    want = weights_for(logits, ids, knobs, scale.detach().double() if scale is not None else None)
    assert_close(weights.double(), want, TOL, f"{family} router weights vs reference {knobs.variant}")
