"""Parity of the reference routing with the real transformers routers, one family per variant.

Each family's tiny model is built once; hidden states are drawn by Hypothesis; the real router's picks
must be a valid top-K of the reference's selection score, and its weights equal the reference's
weights for those picks (float32 arithmetic on both sides).
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.assertions import assert_close, assert_valid_routing
from harness.families import tiny_spec
from harness.targets.transformers.blocks import RealMoEBlock, real_block
from harness.targets.transformers.knobs import router_picks
from harness.tiny_configs import discover_moe_families
from harness.tolerances import Tolerance
from reference.moe import MoEBlock, init_block
from reference.routing import weights_for

# One family or more per routing variant and shared-expert combination: softmax_bias (ernie4_5_moe),
# grouped_softmax with top-2-sum groups (mistral4) and DeepSeek-V2's greedy (deepseek_v2), sigmoid_logit_bias
# (kolibri1), a shared MLP on the decoder layer (granitemoeshared), and a text model nested in a vision
# config that used to escape shrinking (qwen3_vl_moe); one per expert form: the clamped SwiGLU (glm5_next_text),
# the softcapped SwiGLU (inkling2_text), non-gated relu2 experts (nemotron_h), experts on a decoder layer with
# no enable_moe_block flag (diffusion_gemma_text), unbiased sigmoid scores (flint).
PARITY_FAMILIES = ("mixtral", "qwen3_moe", "olmoe", "qwen2_moe", "gpt_oss", "granitemoe", "deepseek_v3",
                   "minimax_m2", "llama4_text", "gemma4_text", "ernie4_5_moe", "mistral4", "deepseek_v2",
                   "kolibri1", "granitemoeshared", "qwen3_vl_moe", "glm5_next_text", "inkling2_text", "nemotron_h",
                   "diffusion_gemma_text", "flint")
# Block-level only: minimax_m3_vl_text's router leaves routed_scaling_factor to the block, which also holds
# a fused swiglu_oai shared MLP; so does beam's; axk1
# RMS-norms the block's output.
BLOCK_FAMILIES = PARITY_FAMILIES + ("minimax_m3_vl_text", "beam", "axk1")
TOL = Tolerance(1e-5, 1e-6)
INSTALLED = set(discover_moe_families())


def _installed(families: tuple[str, ...]) -> list:
    """The families as parameters; one the installed (older) transformers lacks is skipped, saying so."""
    return [pytest.param(f, marks=pytest.mark.skipif(f not in INSTALLED, reason=f"transformers has no {f} yet"))
            for f in families]


# float32 on both sides, summed in a different order: NOTES §6's float32 tolerance.
BLOCK_TOL = Tolerance(1.3e-6, 1e-5)


@functools.cache
def _real_block(family: str) -> RealMoEBlock:
    # Seeded values in every tensor (biases, per-expert scales and norms too), so no knob sits at identity.
    return init_block(real_block(family, tiny_spec(family)), seed=7)


@pytest.mark.parametrize("family", _installed(PARITY_FAMILIES))
@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_router_matches_reference(family: str, tokens: int, seed: int) -> None:
    spec = tiny_spec(family)
    real = _real_block(family)
    x = torch.randn(tokens, spec.hidden_size, generator=torch.Generator().manual_seed(seed)) * 4
    with torch.no_grad():
        logits = real.router_logits(x).double()
        out = real.route(x)
    weights, ids = router_picks(out, spec.top_k)
    state = real.reference_state()
    bias = state.get("e_score_correction_bias", torch.zeros(spec.num_experts)).double()
    scale = state.get("per_expert_scale")
    knobs = spec.routing
    assert_valid_routing(logits, knobs, bias, ids, spec.top_k)
    want = weights_for(logits, ids, knobs, scale.double() if scale is not None else None)
    assert_close(weights.double(), want, TOL, f"{family} router weights vs reference {knobs.variant}")


@pytest.mark.parametrize("family", _installed(BLOCK_FAMILIES))
@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_block_matches_reference(family: str, tokens: int, seed: int) -> None:
    """The real block and the reference block holding its weights give the same output."""
    spec = tiny_spec(family)
    real = _real_block(family)
    ref = MoEBlock(spec)
    ref.load_state_dict(real.reference_state(), strict=True)
    x = torch.randn(tokens, spec.hidden_size, generator=torch.Generator().manual_seed(seed)) * 2
    with torch.no_grad():
        want = ref(x.double().float(), router_logits=real.router_logits(x))
        got = real.forward(x)
    assert_close(got, want, BLOCK_TOL, f"{family} block output vs reference block with its weights")


class _BiasInWeightsBlock(MoEBlock):
    """softmax_bias done wrong: the selection bias also enters the weights (p[i] + bias[i])."""

    def routing(self, logits: torch.Tensor, oracle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        weights, ids = super().routing(logits, oracle)
        bias = self.e_score_correction_bias.to(weights.dtype)[ids.long()]
        if self.spec.routing.renormalize:
            biased = weights + bias
            return biased / biased.sum(-1, keepdim=True), ids
        return weights + bias, ids


def test_block_parity_catches_the_bias_in_the_weights() -> None:
    """block-parity fails on an ernie4_5_moe block whose softmax_bias routing weighs with the biased score."""
    import dataclasses

    from harness.checks import CHECKS
    from harness.engine import run_case
    from harness.families import get_family
    from harness.targets.base import BlockCap
    from harness.targets.reference import make_target
    from harness.verdict import ErrorKind, Status

    assert tiny_spec("ernie4_5_moe").routing.variant == "softmax_bias"
    broken = dataclasses.replace(make_target(), name="broken", known_failures=[], block=BlockCap(
        lambda spec, seed=0, dtype=torch.float32: init_block(_BiasInWeightsBlock(spec, dtype), seed)))
    verdict = run_case(CHECKS["block-parity"], broken, get_family("ernie4_5_moe"))
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, verdict
