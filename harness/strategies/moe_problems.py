"""Fused-MoE problems at a family's tiny sizes: tokens, dtype, routing style, and the tensors they make."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from harness.families import Family
from harness.strategies.sizes import sizes
from reference.routing import route

# "routed": the family's router on random logits; "hot": every token picks the same K experts, so one
# expert gets many rows (several blocks of a kernel that groups rows by expert).
STYLES = ("routed", "hot")


@dataclass(frozen=True)
class MoEProblem:
    experts: int
    top_k: int
    hidden: int
    width: int
    activation: str
    tokens: int
    dtype: torch.dtype
    style: str
    seed: int

    def describe(self) -> dict[str, object]:
        return {"experts": self.experts, "top_k": self.top_k, "hidden": self.hidden, "width": self.width,
                "activation": self.activation, "tokens": self.tokens,
                "dtype": str(self.dtype).removeprefix("torch."), "style": self.style, "seed": self.seed}


def moe_problems(family: Family, dtypes: tuple[torch.dtype, ...]) -> st.SearchStrategy[MoEProblem]:
    """Problems of `family`'s tiny spec (E, K, H, I and activation fixed): 1..40 tokens (weighted toward one
    and 40), a dtype of `dtypes`,
    a style of STYLES, a seed in 0..2**16. Shrinks toward one token, the first dtype, the routed style."""
    spec = family.spec
    return st.builds(MoEProblem, experts=st.just(spec.num_experts), top_k=st.just(spec.top_k),
                     hidden=st.just(spec.hidden_size), width=st.just(spec.intermediate_size),
                     activation=st.just(spec.activation), tokens=sizes(1, 40), dtype=st.sampled_from(dtypes),
                     style=st.sampled_from(STYLES), seed=st.integers(0, 2**16))


def problem_inputs(family: Family, p: MoEProblem) -> tuple[torch.Tensor, ...]:
    """(x, weights float32, ids int32, gate_up_proj, down_proj), x and projections in p.dtype; routing is
    the family's own on logits from p.seed (all K picks on the first K experts for the hot style)."""
    gen = torch.Generator().manual_seed(p.seed)
    x = torch.randn(p.tokens, p.hidden, generator=gen, dtype=torch.float64)
    gate_up = torch.randn(p.experts, 2 * p.width, p.hidden, generator=gen, dtype=torch.float64) / math.sqrt(p.hidden)
    down = torch.randn(p.experts, p.hidden, p.width, generator=gen, dtype=torch.float64) / math.sqrt(p.width)
    logits = torch.randn(p.tokens, p.experts, generator=gen, dtype=torch.float64)
    if p.style == "hot":
        logits[:, : p.top_k] += 100.0
    bias = torch.randn(p.experts, generator=gen) * 0.1
    scale = torch.rand(p.experts, generator=gen) + 0.5
    weights, ids = route(logits.float(), family.spec.routing, bias=bias, per_expert_scale=scale)
    return x.to(p.dtype), weights, ids, gate_up.to(p.dtype), down.to(p.dtype)


def problem_biases(family: Family, p: MoEProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' biases (gate_up_bias [E, 2I], down_bias [E, H]) in p.dtype for a family whose experts have them,
    from p.seed's second stream (problem_inputs' tensors stay what they are)."""
    gen = torch.Generator().manual_seed(p.seed + 2**17)
    gate_up_bias = torch.randn(p.experts, 2 * p.width, generator=gen, dtype=torch.float64)
    down_bias = torch.randn(p.experts, p.hidden, generator=gen, dtype=torch.float64) * 0.1
    return gate_up_bias.to(p.dtype), down_bias.to(p.dtype)
