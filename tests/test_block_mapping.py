"""The block mapper's newer pieces and the reference pieces they map onto.

Non-gated experts (nemotron_h: down(relu2(up x))), the clamped and softcapped SwiGLUs (glm5_next, inkling2), a
post-block RMSNorm (axk1), experts on a decoder layer without gemma4's flag (diffusion_gemma), and skip reasons
that carry their kind. Each reference piece is checked twice: it computes what the family's own code computes,
on inputs wide enough to reach its clamps and caps, and block-parity fails on a block that gets it wrong.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from harness.checks import CHECKS
from harness.engine import run_case
from harness.families import Family, get_family, tiny_spec
from harness.targets.base import BlockCap
from harness.targets.reference import make_target
from harness.targets.transformers.blocks import (
    RealMoEBlock,
    UnmappedBlock,
    _experts_on_layer,
    _post_norm,
    find_block,
    real_block,
    skip_reason,
)
from harness.targets.transformers.tiny_model import base_config
from harness.verdict import SkipKind, Status, skip_kind
from reference.config import MoESpec, UnsupportedConfig, resolve_moe_spec
from reference.moe import MoEBlock, RMSNorm, glu, init_block

WIDE = 40.0  # input scale reaching glm5_next's clamp (10) and inkling2's caps (4, 25)


def _wide(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float() * WIDE


@functools.cache
def _block(family: str) -> RealMoEBlock:
    return init_block(real_block(family, tiny_spec(family)), seed=3)


# --- the reference pieces compute what the families' code computes ---------------------------------------------

def test_swiglu_clamp_is_glm5_next_experts_gate() -> None:
    spec = tiny_spec("glm5_next_text")
    gate_up = _wide(64, 2 * spec.intermediate_size)
    gate, up = gate_up.chunk(2, dim=-1)
    assert (gate.abs() > spec.glu_limit).any() and (up.abs() > spec.glu_limit).any()
    theirs = _block("glm5_next_text").experts._apply_gate(gate_up)
    torch.testing.assert_close(glu(gate, up, spec.activation, limit=spec.glu_limit), theirs)


def test_swiglu_softcap_is_inkling2_activation() -> None:
    spec = tiny_spec("inkling2_text")
    assert spec.activation == "swiglu_softcap" and spec.glu_softcaps == (4.0, 25.0)
    gate, up = _wide(64, 16, seed=1), _wide(64, 16, seed=2)
    theirs = _block("inkling2_text").experts.act_fn(gate, up)
    torch.testing.assert_close(glu(gate, up, spec.activation, softcaps=spec.glu_softcaps), theirs)


def test_non_gated_relu2_is_nemotron_h_experts() -> None:
    """A non-gated reference block computes nemotron_h's experts and shared MLP, on inputs far from zero."""
    spec = tiny_spec("nemotron_h")
    assert not spec.gated and spec.activation == "relu2"
    real = _block("nemotron_h")
    state = real.reference_state()
    assert "experts.up_proj" in state and "experts.gate_up_proj" not in state
    assert "shared_experts.gate_proj.weight" not in state
    ref = MoEBlock(spec)
    ref.load_state_dict(state, strict=True)
    x = _wide(8, spec.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(ref(x, router_logits=real.router_logits(x)), real(x), rtol=1e-5, atol=1e-4)


def test_rms_norm_is_axk1_post_mlp_layernorm() -> None:
    spec = tiny_spec("axk1")
    theirs = _block("axk1").moe.get_submodule("post_mlp_layernorm")
    ours = RMSNorm(spec.hidden_size, spec.post_norm_eps or 0.0, torch.float32)
    with torch.no_grad():
        ours.weight.copy_(theirs.weight)
    x = _wide(8, spec.hidden_size) / WIDE * 1e-3  # small enough that eps matters
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


# --- block-parity fails on a block that gets a piece wrong ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Respecified(Family):
    """A family run on a changed spec (a smaller clamp, so that block-parity's inputs reach it)."""

    changed: MoESpec | None = None

    @property
    def spec(self) -> MoESpec:
        assert self.changed is not None
        return self.changed


class _NormBeforeSharedBlock(MoEBlock):
    """axk1 done wrong: the post-block norm applied to the routed output before the shared expert is added."""

    def combine(self, x: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
        assert self.post_norm is not None
        shared = self.shared(x)
        return self.post_norm(routed) + (0 if shared is None else shared)


def _swap_activation(activation: str, **changes: object) -> Callable[[MoESpec], MoEBlock]:
    return lambda spec: MoEBlock(dataclasses.replace(spec, activation=activation, **changes))


def _block_parity_of(build: Callable[[MoESpec], MoEBlock], family: Family) -> Status:
    target = dataclasses.replace(make_target(), name="broken", known_failures=[], block=BlockCap(
        lambda spec, seed=0, dtype=torch.float32: init_block(build(spec), seed).to(dtype)))
    return run_case(CHECKS["block-parity"], target, family, max_examples=20).status


_GLM5_SMALL_CLAMP = _Respecified("glm5_next_text", changed=dataclasses.replace(tiny_spec("glm5_next_text"),
                                                                                glu_limit=0.25))


@pytest.mark.parametrize(("family", "broken"), [
    (_GLM5_SMALL_CLAMP, _swap_activation("silu")),  # the clamps left out
    (get_family("inkling2_text"), _swap_activation("silu")),  # the softcaps left out
    (get_family("nemotron_h"), _swap_activation("silu")),  # a non-gated expert with the wrong activation
    (get_family("nemotron_h"), lambda spec: MoEBlock(dataclasses.replace(spec, gated=True))),  # gated: no load
    (get_family("axk1"), _NormBeforeSharedBlock),
    (get_family("axk1"), lambda spec: MoEBlock(dataclasses.replace(spec, post_norm_eps=None))),  # no norm
], ids=["clamp-missing", "softcap-missing", "relu2-as-silu", "gated-for-non-gated", "norm-before-shared",
        "norm-missing"])
def test_block_parity_catches_a_wrong_piece(family: Family, broken: Callable[[MoESpec], MoEBlock]) -> None:
    assert _block_parity_of(MoEBlock, family) == Status.PASS  # the right piece passes
    assert _block_parity_of(broken, family) in (Status.FAIL, Status.ERROR)


# --- the mapper ---------------------------------------------------------------------------------------------------

def test_experts_on_a_layer_without_the_gemma4_flag() -> None:
    """diffusion_gemma's encoder layer holds router and experts beside its dense mlp, with no enable_moe_block."""
    layer = find_block("diffusion_gemma_text")
    assert not hasattr(layer, "enable_moe_block") and _experts_on_layer(layer)
    assert _experts_on_layer(find_block("gemma4_text"))
    assert not _experts_on_layer(find_block("qwen3_moe"))
    assert _block("diffusion_gemma_text").on_layer


def test_post_norm_needs_exactly_one_norm_child() -> None:
    assert _post_norm("axk1", find_block("axk1")) == "post_mlp_layernorm"
    with pytest.raises(UnmappedBlock, match="0 norm modules"):
        _post_norm("qwen3_moe", find_block("qwen3_moe"))
    two = nn.Module()
    two.a_norm, two.b_norm = nn.RMSNorm(4), nn.RMSNorm(4)
    with pytest.raises(UnmappedBlock, match="2 norm modules"):
        _post_norm("fake", two)


@pytest.mark.parametrize(("family", "kind"), [
    ("vitpose_backbone", SkipKind.NOT_APPLICABLE),  # no routed-experts block at all
    ("nllb-moe", SkipKind.HARNESS_LIMIT),  # unsupported routing
    ("phimoe", SkipKind.HARNESS_LIMIT),  # unmodelled, by its record
    ("doge", SkipKind.HARNESS_LIMIT),  # unmodelled, found by name before its (MoE-less) tiny model is searched
    ("zaya", SkipKind.HARNESS_LIMIT),
])
def test_skip_reasons_carry_their_kind(family: str, kind: SkipKind) -> None:
    reason = skip_reason(family)
    assert reason is not None and skip_kind(reason) == kind, reason


@pytest.mark.parametrize("family", ["beam", "glm5_next", "step3p7", "inkling2_loop_text", "diffusion_gemma",
                                    "nemotron_h_omni", "axk1"])
def test_newly_described_families_map(family: str) -> None:
    assert skip_reason(family) is None


# --- config resolution of the new pieces --------------------------------------------------------------------------

def test_step3p7_reads_its_shared_width_and_scaling_spellings() -> None:
    config = base_config("step3p5")
    config.moe_router_scaling_factor, config.share_expert_dim = 3.0, 24
    spec = resolve_moe_spec(config)
    assert spec.routing.scaling_factor == 3.0 and spec.shared_intermediate_size == 24
    assert spec.shared_combine == "add"


def test_per_layer_swiglu_clamps_are_refused() -> None:
    """step3p7 clamps chosen layers' SwiGLU by a per-layer list; one activation per block is modelled."""
    config = base_config("step3p5")
    moe_layer = resolve_moe_spec(config).moe_layers[0]
    limits = [0.0] * config.num_hidden_layers
    config.swiglu_limits = limits
    resolve_moe_spec(config)  # all zero: no clamp anywhere
    limits[moe_layer] = 7.0
    with pytest.raises(UnsupportedConfig, match="swiglu_limits"):
        resolve_moe_spec(config)
