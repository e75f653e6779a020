"""Routing kernel time with and without the register cap, per variant, dtype and launch (a script, not a test).

    python3 -m bench.routing_registers [--tokens 1048576]

The kernel alone (CUDA graph replay), T tokens of E experts, top 8, each launch uncapped and capped at
MAX_REGISTERS: the measurements behind `register_cap` (bench/README.md).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from bench.kernels import graph_ms
from reference.config import RoutingKnobs
from reference.triton.routing import MAX_REGISTERS, RouteLaunch, default_launch, launch_route

CASES = (("gemma4", 128, {}), ("softmax_topk", 128, {}), ("sigmoid_bias", 128, {}),
         ("sigmoid_topk_on_logits", 128, {}), ("gemma4", 256, {}), ("grouped", 256, {"n_group": 8, "topk_group": 4}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2**20)
    args = parser.parse_args()
    for name, experts, groups in CASES:
        for dtype in (torch.float32, torch.bfloat16):
            logits = (torch.randn(args.tokens, experts, device="cuda") * 3).to(dtype)
            knobs = RoutingKnobs(name, 8, renormalize=True, **groups)
            extra = {"per_expert_scale": torch.rand(experts, device="cuda") + 0.5} if name == "gemma4" else {}
            base = default_launch(experts, logits.element_size(), args.tokens, name)
            times = [graph_ms(partial(launch_route, logits, knobs, launch=RouteLaunch(base.block_t, base.num_warps, cap),
                                      **extra)) for cap in (None, MAX_REGISTERS)]
            print(f"{name} E={experts} {dtype} block_t={base.block_t} warps={base.num_warps} (default cap "
                  f"{base.max_registers}): uncapped {times[0]:.4f} ms, capped {times[1]:.4f} ms", flush=True)


if __name__ == "__main__":
    main()
