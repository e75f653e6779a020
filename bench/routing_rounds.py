"""What the routing kernel's time at large T goes to: its selection rounds, or the rest (a script, not a test).

    python3 -m bench.routing_rounds [--tokens 1048576] [--experts 128] [--k 1 2 4 8]

Times the kernel alone (CUDA graph replay, as `bench.kernels`' kernel column) on gemma4 routing of fp32 logits with
the default launch, at K = 1, 2, 4, 8: K - 1 selection rounds over the same bytes, so the time's growth with K is
the rounds' cost and the time at K = 1 is the load, keys, epilogue and store, against the bandwidth floor.
"""

from __future__ import annotations

import argparse
from functools import partial

from bench.kernels import copy_bandwidth, graph_ms, routing_inputs
from reference.triton.routing import default_launch, launch_route


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2**20)
    parser.add_argument("--experts", type=int, default=128)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8], help="the top-k values to time")
    args = parser.parse_args()
    bandwidth = copy_bandwidth()
    launch = default_launch(args.experts, 4, args.tokens, "gemma4")
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; E = {args.experts}, T = {args.tokens}, {launch}")
    for k in args.k:
        logits, knobs, scale = routing_inputs(args.tokens, args.experts, k)
        floor = (logits.numel() * 4 + args.tokens * k * 8) / bandwidth * 1e3
        ms = graph_ms(partial(launch_route, logits, knobs, per_expert_scale=scale, launch=launch))
        print(f"K = {k}: {k - 1} rounds, kernel {ms:.4f} ms, floor {floor:.4f} ms ({100 * floor / ms:.0f}%)",
              flush=True)


if __name__ == "__main__":
    main()
