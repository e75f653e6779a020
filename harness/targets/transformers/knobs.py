"""Routing knobs of the installed transformers: the ones each family's config declares, and its real router
built with any of them set.

A knob is a config field spelled as NOTES §2's knobs are (norm_topk_prob / moe_renormalize,
routed_scaling_factor, n_group / num_expert_group, topk_group) or the experts-per-token count, found as a stored field or through an
`attribute_map` alias. The routing a block really uses is read off its experts' inputs (the ids and
weights they are called with) while the family's own block runs; a block whose experts take no ids
(llama4) is read off the dense score matrix its router returns.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from harness.targets.base import Knob, RouterRun
from harness.targets.transformers.blocks import RealMoEBlock
from harness.targets.transformers.blocks import skip_reason as block_skip
from harness.targets.transformers.spellings import (
    base_config,
    build_model,
    moe_blocks,
    with_moe_fields,
)
from harness.tiny_configs import moe_path, sub_config
from harness.verdict import not_applicable
from reference.config import (
    N_GROUP_SPELLINGS,
    RENORM_SPELLINGS,
    SCALING_SPELLINGS,
    TOP_K_SPELLINGS,
    resolve_moe_spec,
)

KNOB_SPELLINGS: dict[str, tuple[str, ...]] = {
    "renormalize": RENORM_SPELLINGS,
    "scaling_factor": SCALING_SPELLINGS,
    "n_group": N_GROUP_SPELLINGS,
    "topk_group": ("topk_group",),
    # Last: a drawn example shrinks toward the first knob, and the knobs above are the ones NOTES §2 lists.
    "top_k": TOP_K_SPELLINGS,
}


@functools.cache
def knobs(family: str) -> tuple[Knob, ...]:
    """The routing knobs the family's tiny MoE (sub-)config declares with a value, under its stored names."""
    config = base_config(family)
    sub = sub_config(config, moe_path(config) or "")
    stored = sub.to_dict()
    aliases: dict[str, str] = dict(getattr(type(sub), "attribute_map", {}) or {})
    found = []
    for kind, spellings in KNOB_SPELLINGS.items():
        name = next((n for n in spellings if n in stored), None)
        name = name or next((aliases[n] for n in spellings if aliases.get(n) in stored), None)
        if name is not None and stored[name] is not None:
            found.append(Knob(kind, name, stored[name]))
    return tuple(found)


def _first_block(model: nn.Module) -> nn.Module:
    blocks = moe_blocks(model)
    if not blocks:
        raise ValueError("the model has no MoE block")
    return next(iter(blocks.values()))


def router_picks(out: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, ids) from a router's outputs: int [T,K] ids with their float [T,K] weights, or the
    nonzero entries of a dense [T,E] score matrix (the first output)."""
    outs = out if isinstance(out, tuple) else (out,)
    ints = [t for t in outs if isinstance(t, torch.Tensor) and not t.is_floating_point()]
    if ints:
        ids = ints[0].reshape(-1, ints[0].shape[-1])
        floats = [t for t in outs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() == ids.numel()]
        return floats[0].reshape(ids.shape), ids
    dense = outs[0]
    ids = dense.abs().topk(k, dim=-1).indices
    return dense.gather(-1, ids), ids


def _output_factor(contribution: torch.Tensor, experts_out: torch.Tensor) -> torch.Tensor:
    """Per token, the factor c with contribution ≈ c * experts_out (least squares); 1 where it is 1 to
    within rounding, or where the experts' output is zero or the contribution is no multiple of it."""
    a, b = contribution.double(), experts_out.double()
    norm = (b * b).sum(-1)
    c = torch.where(norm > 0, (a * b).sum(-1) / norm.clamp_min(1e-300), torch.ones_like(norm))
    residual = (a - c[:, None] * b).abs().amax(-1)
    multiple = residual <= 1e-4 * a.abs().amax(-1).clamp_min(1e-12)
    c = torch.where(multiple & ((c - 1).abs() > 1e-4), c, torch.ones_like(c))
    return c.to(torch.float32)


class _RealRouter:
    """The routing a family's real block uses: the experts' (weights, ids) while the block runs."""

    def __init__(self, block: RealMoEBlock, top_k: int) -> None:
        self.block, self.top_k = block, top_k

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weights, ids) the experts are called with, each token's weights times any factor the block
        applies to the experts' summed output afterwards (a routed scaling factor applied after aggregation)."""
        seen: list[tuple[Any, ...]] = []
        outputs: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.append((*args, *kwargs.values()))

        def keep(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            outputs.append(out)

        def silence(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(out)

        experts = self.block.experts
        handles = [experts.register_forward_pre_hook(hook, with_kwargs=True), experts.register_forward_hook(keep)]
        try:
            with torch.no_grad():
                full = self.block(x)
        finally:
            for handle in handles:
                handle.remove()
        inputs = seen[0] if seen else ()
        ints = [t for t in inputs if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dim() == 2]
        if not ints:
            with torch.no_grad():
                return router_picks(self.block.route(x), self.top_k)
        ids = ints[0]
        weights = [t for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.shape == ids.shape][0]
        handle = experts.register_forward_hook(silence)
        try:
            with torch.no_grad():
                without = self.block(x)
        finally:
            handle.remove()
        return weights * _output_factor(full - without, outputs[0].reshape(full.shape))[:, None], ids

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.block.router_logits(x)


@functools.lru_cache(maxsize=32)
def build(family: str, overrides: tuple[tuple[str, Any], ...], seed: int = 0) -> RouterRun:
    """The family's real router (as its first MoE block uses it) from its tiny config with `overrides` set."""
    config = with_moe_fields(family, dict(overrides))
    spec = resolve_moe_spec(config)
    real = RealMoEBlock(family, spec, _first_block(build_model(config, seed)))
    state = real.reference_state()
    router = _RealRouter(real, spec.top_k)
    return RouterRun(config=config, hidden_size=spec.hidden_size, route=router.route, logits=router.logits,
                     bias=state.get("e_score_correction_bias"), per_expert_scale=state.get("per_expert_scale"))


def skip_reason(family: str) -> str | None:
    """Why the family's router is not run here (no block the reference models, or no declared knob), or None."""
    reason = block_skip(family)
    if reason:
        return reason
    if not knobs(family):
        return not_applicable("its config declares no routing knob ("
                              + ", ".join(n for s in KNOB_SPELLINGS.values() for n in s) + ")")
    return None
