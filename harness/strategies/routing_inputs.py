"""Router logits with the values that break routers: ties at the K-th place, -inf, huge magnitudes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from harness.strategies.sizes import REAL_EXPERT_COUNTS, REAL_TOP_KS, sizes
from reference.config import RoutingKnobs
from reference.variants import GROUP_SCORES, ROUTING_VARIANTS, variant

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STYLES = ("normal", "ties_at_k", "all_equal", "neg_inf", "huge")


@dataclass(frozen=True)
class RoutingExample:
    logits: torch.Tensor
    knobs: RoutingKnobs
    bias: torch.Tensor | None
    per_expert_scale: torch.Tensor | None
    style: str
    seed: int

    def describe(self) -> dict[str, object]:
        return {
            "variant": self.knobs.variant,
            "tokens": self.logits.shape[0],
            "experts": self.logits.shape[1],
            "top_k": self.knobs.top_k,
            "dtype": str(self.logits.dtype).removeprefix("torch."),
            "style": self.style,
            "knobs": {k: v for k, v in vars(self.knobs).items() if k not in ("variant", "top_k")},
            "seed": self.seed,
        }


def _logits(tokens: int, experts: int, top_k: int, style: str, seed: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, experts, generator=gen, dtype=torch.float64) * 3
    if style == "all_equal":
        x = torch.zeros_like(x) + 0.5
    elif style == "ties_at_k" and top_k < experts:
        # Give the K-th and a later expert the same value so the tie straddles the cut.
        order = x.argsort(dim=-1, descending=True)
        kth = x.gather(-1, order[:, top_k - 1 : top_k])
        x.scatter_(-1, order[:, top_k : top_k + 1], kth)
    elif style == "neg_inf":
        mask = torch.rand(tokens, experts, generator=gen) < 0.3
        mask[:, :top_k] = False  # keep at least K finite choices per token
        x = x.masked_fill(mask, float("-inf"))
    elif style == "huge":
        x = x * (6e4 if dtype == torch.float16 else 1e30)
    return x.to(dtype)


@st.composite
def routing_examples(draw: st.DrawFn, variants: tuple[str, ...] = ROUTING_VARIANTS,
                     max_tokens: int = 32, max_experts: int = 64,
                     group_scores: tuple[str, ...] = GROUP_SCORES,
                     renormalize: tuple[bool, ...] = (False, True)) -> RoutingExample:
    """A routing example of one of `variants`: E in 1..max_experts (any, not only powers of two), K in 1..E
    (K = E included), grouped cases with n_group dividing E (grouped_softmax's groups scored as one of
    `group_scores`), the renormalize knob one of `renormalize`; E, K and the token count weighted toward their
    bounds and released models' values (see `sizes`). Shrinks toward one token, one expert, fp32."""
    name = draw(st.sampled_from(variants))
    rule = variant(name)
    experts = draw(sizes(1, max_experts, REAL_EXPERT_COUNTS))
    kw: dict[str, object] = {}
    k_max = experts
    if rule.grouped and (not rule.groups_optional or draw(st.booleans())):
        divisors = [d for d in range(1, experts + 1) if experts % d == 0]
        n_group = draw(st.sampled_from(divisors))
        topk_group = draw(sizes(1, n_group))
        kw.update(n_group=n_group, topk_group=topk_group)
        if name == "grouped_softmax":  # DeepSeek-V2 scores a group by its max, V3-style by its top-2 sum
            kw["group_score"] = draw(st.sampled_from(group_scores))
        k_max = topk_group * (experts // n_group)
    top_k = draw(sizes(1, k_max, REAL_TOP_KS))
    if rule.renormalizes:
        kw["renormalize"] = draw(st.sampled_from(renormalize))
    if rule.scaled:
        kw["scaling_factor"] = draw(st.sampled_from((1.0, 2.5)))
    knobs = RoutingKnobs(variant=name, top_k=top_k, **kw)  # type: ignore[arg-type]
    tokens = draw(sizes(1, max_tokens))
    dtype = draw(st.sampled_from(LOGIT_DTYPES))
    style = draw(st.sampled_from(STYLES))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed + 1)
    bias = torch.randn(experts, generator=gen) * 0.1 if knobs.selection_bias else None
    scale = torch.rand(experts, generator=gen) + 0.5 if knobs.per_expert_scale else None
    return RoutingExample(_logits(tokens, experts, top_k, style, seed, dtype), knobs, bias, scale, style, seed)
