"""Target `torchtitan`: torchtitan 0.3.0's MoE layer as its own model configs build it (router, block), and as its
transformers backend swaps it in for a Hugging Face model's MoE blocks when it trains that model (swap-parity over
every transformers MoE family). It runs in its own environment (`environments.toml`: torchtitan 0.3.0 with
transformers 5.23).
"""

from __future__ import annotations

import warnings
from importlib import metadata

import torch

from harness.findings import load_known_failures
from harness.targets.base import BlockCap, ConverterCap, RoutingCap, SwapCap, Target
from harness.targets.loading import TargetUnavailable


def make_target() -> Target:
    """The torchtitan Target; TargetUnavailable (with the reason) where torchtitan does not import."""
    try:
        import torchtitan.experiments.transformers_modeling_backend.moe_replacement  # noqa: F401
    except ImportError as exc:
        raise TargetUnavailable(f"torchtitan is not importable here ({type(exc).__name__}: {exc}); "
                                "`moe-harness run --target torchtitan` runs it in its own environment") from exc
    from harness.checks.swap_parity import no_block_reason
    from harness.families import tiny_spec
    from harness.targets.torchtitan import block, converters, routing, swap
    from harness.tiny_configs import discover_moe_families

    # Its router asks for float32 autocast, which a CPU does not offer (it then runs without, as intended); fla warns
    # that Triton has no CPU backend. Neither says anything about the code under test: said once here, not per case.
    warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
    warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
    return Target(
        name="torchtitan",
        version=metadata.version("torchtitan"),
        description="torchtitan's MoE layer (router, grouped experts in bf16, shared experts) as its models build it "
                    "and as its transformers backend swaps it in for a Hugging Face block; its state-dict converters",
        # GroupedExperts casts inputs and weights to bf16 for torch._grouped_mm, whatever the model's dtype.
        swap=SwapCap(swap.swap, compute_dtype=torch.bfloat16, route=swap.route),
        routing=RoutingCap(routing.route, tuple(routing.SCORE_FUNCTIONS)),
        block=BlockCap(block.build, skip=lambda family: block.skip_reason(tiny_spec(family)),
                       compute_dtype=torch.bfloat16, inert=block.INERT),
        converter=ConverterCap(converters.converters, skip=no_block_reason),
        families=discover_moe_families(),
        known_failures=load_known_failures(__file__, "torchtitan"),
    )
