"""Target `reference-triton`: our Triton routing and fused-MoE kernels, judged against the torch reference.

With a CUDA device the kernels are compiled for it; without one they run in Triton's interpreter on the
CPU (`reference.triton` settles TRITON_INTERPRET; this module imports it, and Triton, only inside
`make_target`, so listing targets imports neither). The checks hand over CPU tensors; the adapter moves them to the kernels'
device and the results back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from harness.findings import load_known_failures
from harness.targets.base import FusedMoECap, RoutingCap, Target


def on_device(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """`fn` with its tensor arguments moved to `device` and its tensor results moved back to the first's."""

    def move(value: Any, where: torch.device) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(where)
        if isinstance(value, tuple):
            return tuple(move(v, where) for v in value)
        return value

    def call(*args: Any, **kwargs: Any) -> Any:
        home = next(a.device for a in args if isinstance(a, torch.Tensor))
        result = fn(*(move(a, device) for a in args), **{k: move(v, device) for k, v in kwargs.items()})
        return move(result, home)

    call.__doc__ = fn.__doc__
    return call


def make_target() -> Target:
    from reference.triton import INTERPRETED, KERNEL_DEVICE  # noqa: I001 - first: it settles TRITON_INTERPRET
    from reference.triton.fused_moe import ACTIVATIONS, experts_forward
    from reference.triton.routing import KERNEL_VARIANTS, route
    import triton

    # bf16 tl.dot returns garbage in the interpreter (NOTES §8): bf16 fused MoE is checked on the GPU only.
    moe_dtypes = (torch.float32, torch.float16) if INTERPRETED else (torch.float32, torch.bfloat16, torch.float16)
    mode = "interpreted on the CPU" if INTERPRETED else f"compiled for {torch.cuda.get_device_name()}"
    return Target(
        name="reference-triton",
        version=f"triton {triton.__version__}",
        description=f"moe-harness's Triton routing and fused-MoE kernels ({mode})",
        routing=RoutingCap(on_device(route, KERNEL_DEVICE), KERNEL_VARIANTS),
        fused_moe=FusedMoECap(on_device(experts_forward, KERNEL_DEVICE), moe_dtypes, ACTIVATIONS,
                              facts=("expert_bias", "weight_on_input")),
        known_failures=load_known_failures(__file__, "reference-triton"),
    )
