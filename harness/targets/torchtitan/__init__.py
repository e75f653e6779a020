"""Target `torchtitan`: torchtitan 0.3.0's MoE as its transformers backend swaps it in for a Hugging Face model's
MoE blocks when it trains that model (swap-parity over every transformers MoE family). It runs in its own
environment (`environments.toml`: torchtitan 0.3.0 with transformers 5.23).
"""

from __future__ import annotations

from importlib import metadata

import torch

from harness.findings import load_known_failures
from harness.targets.base import RoutingCap, SwapCap, Target
from harness.targets.loading import TargetUnavailable


def make_target() -> Target:
    """The torchtitan Target; TargetUnavailable (with the reason) where torchtitan does not import."""
    try:
        import torchtitan.experiments.transformers_modeling_backend.moe_replacement  # noqa: F401
    except ImportError as exc:
        raise TargetUnavailable(f"torchtitan is not importable here ({type(exc).__name__}: {exc}); "
                                "`moe-harness run --target torchtitan` runs it in its own environment") from exc
    from harness.targets.torchtitan import routing, swap
    from harness.tiny_configs import discover_moe_families

    return Target(
        name="torchtitan",
        version=metadata.version("torchtitan"),
        description="torchtitan's MoE (router, grouped experts in bf16, shared experts) as its transformers backend "
                    "builds it from a Hugging Face MoE block and converts the block's weights",
        # GroupedExperts casts inputs and weights to bf16 for torch._grouped_mm, whatever the model's dtype.
        swap=SwapCap(swap.swap, compute_dtype=torch.bfloat16, route=swap.route),
        routing=RoutingCap(routing.route, tuple(routing.SCORE_FUNCTIONS)),
        families=discover_moe_families(),
        known_failures=load_known_failures(__file__, "torchtitan"),
    )
