"""Kernel benchmark (a script, not a test): the Triton routing and fused MoE against torch, on a GPU.

    python -m bench.kernels --out kernels.json [--sweep]       (or --host-profile: where the launch path's time goes)

Routing: gemma4 routing (top K on the logits, softmax over the K, per-expert scale) of fp32 logits,
T in {1024, 16384, 262144, 1048576}, (E, K) in {(128, 8), (64, 2), (256, 8)}. Time is the median of
`triton.testing.do_bench` (which flushes L2 before every run) of the public `route` call; the floor is
the bytes the routing must move (logits read, weights and ids written) over the measured device copy
bandwidth; the speed-up is over the torch reference `reference.routing.route` on the same device. Every row
also gives the kernel alone (its launches replayed from a CUDA graph) and the host time of a call.

Fused MoE: bf16, T in {1, 16, 256, 4096, 16384}, Gemma4-26B-A4B, Qwen3-30B-A3B and Mixtral-8x7B expert
shapes, one routing (softmax top-K, renormalised) fed to three implementations: ours, a grouped_mm
pipeline as transformers' default experts backend runs it (sort, gather, grouped_mm, activation,
grouped_mm, weights, un-sort, sum over K), and the reference's eager per-expert loop. TFLOP/s count
6·T·K·H·I; the weights floor is the routed experts' weights read once at the copy bandwidth.

`--sweep` also times the routing launches of ROUTING_SWEEP at T = 2^20 and ROUTING_SMALL_SWEEP at small T,
and MOE_SWEEP's fused-MoE configurations where MOE_SWEEP_AT says (the library's defaults were set from
them); the tables always use the library's defaults; everything measured goes into the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
import triton

from reference.config import RoutingKnobs
from reference.moe import ACTIVATION_FNS
from reference.moe import experts_forward as eager_experts_forward
from reference.routing import route as torch_route
from reference.triton.fused_moe import GemmTile, MoEConfig, default_config, launch_experts
from reference.triton.routing import RouteLaunch, default_launch, launch_route, register_cap

ROUTING_TOKENS = (1024, 16384, 262144, 1048576)
ROUTING_SHAPES = ((128, 8), (64, 2), (256, 8))
MOE_TOKENS = (1, 16, 256, 4096, 16384)
MODELS = {  # E, K, H, I, activation
    "Gemma4-26B-A4B": (128, 8, 2816, 704, "gelu_tanh"),
    "Qwen3-30B-A3B": (128, 8, 2048, 768, "silu"),
    "Mixtral-8x7B": (8, 2, 4096, 14336, "silu"),
}
# Routing launches tried per (E, K) at T = 2^20 with --sweep: (tokens per program, warps).
ROUTING_SWEEP = {
    (128, 8): ((8, 1), (4, 1), (2, 1), (8, 2)),
    (64, 2): ((16, 2), (32, 4), (8, 1)),
    (256, 8): ((4, 1), (2, 1), (1, 1)),
}
# Fused-MoE configurations tried with --sweep at the prefill sizes (the 128-row tile won every prefill
# size in the first sweep, recorded in bench/README.md; these vary the default's row grouping (8), its
# gate/up pipeline depth and its down-projection width).
_BIG = GemmTile(128, 64, 8, 3), GemmTile(128, 64, 8, 4)
MOE_SWEEP = {
    "m128-n128-w8-g8": MoEConfig(128, *_BIG, group_m=8),
    "m128-n128-w8-g16": MoEConfig(128, *_BIG, group_m=16),
    "m128-n128/256-w8-g8": MoEConfig(128, _BIG[0], GemmTile(256, 64, 8, 3), group_m=8),
    "m128-n128/256-w8-g16": MoEConfig(128, _BIG[0], GemmTile(256, 64, 8, 3), group_m=16),
    "m128-n128-s4/256-w8-g8": MoEConfig(128, GemmTile(128, 64, 8, 4), GemmTile(256, 64, 8, 3), group_m=8),
    "m128-n128/k128-w8-g8": MoEConfig(128, _BIG[0], GemmTile(128, 128, 8, 3), group_m=8),
}
# Where MOE_SWEEP is timed: the prefill sizes of each model.
MOE_SWEEP_AT = {"Mixtral-8x7B": (4096, 16384), "Gemma4-26B-A4B": (16384,), "Qwen3-30B-A3B": (16384,)}
# Routing launches tried at the small token counts with --sweep, (128, 8): fewer tokens per program
# spread a small T over more of the GPU.
ROUTING_SMALL_SWEEP = ((1, 1), (2, 1), (4, 1), (8, 1), (4, 2), (8, 4))
ROUTING_SMALL_AT = (1024, 16384)


def median_ms(fn: Callable[[], Any]) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def graph_ms(fn: Callable[[], Any]) -> float:
    """The device time of `fn` alone: its launches captured once in a CUDA graph, the replay timed (no
    Python, no launch path; L2 flushed before each replay as in `median_ms`)."""
    fn()  # compiled and warm before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return median_ms(graph.replay)


def host_us(fn: Callable[[], Any], calls: int = 200) -> float:
    """Microseconds of host time per call of `fn` (its launch path: checks, allocation, launches)."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    spent = time.perf_counter() - start
    torch.cuda.synchronize()
    return spent / calls * 1e6


def copy_bandwidth() -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written (1 GiB each way)."""
    src = torch.randn(2**28, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (median_ms(lambda: dst.copy_(src)) * 1e-3)


def routing_inputs(tokens: int, experts: int, k: int) -> tuple[torch.Tensor, RoutingKnobs, torch.Tensor]:
    logits = torch.randn(tokens, experts, device="cuda") * 3
    scale = torch.rand(experts, device="cuda") + 0.5
    return logits, RoutingKnobs("gemma4", k, renormalize=True), scale


def bench_routing(bandwidth: float) -> list[dict[str, Any]]:
    """The routing table, each row with the library's default launch for its T, E and dtype."""
    rows = []
    for experts, k in ROUTING_SHAPES:
        for tokens in ROUTING_TOKENS:
            logits, knobs, scale = routing_inputs(tokens, experts, k)
            launch = default_launch(experts, 4, tokens, knobs.variant)
            call = partial(launch_route, logits, knobs, per_expert_scale=scale, launch=launch)
            ours, kernel, host = median_ms(call), graph_ms(call), host_us(call)
            ref = median_ms(partial(torch_route, logits, knobs, per_expert_scale=scale))
            _, ids = launch_route(logits, knobs, per_expert_scale=scale, launch=launch)
            same = bool(torch.equal(ids, torch_route(logits, knobs, per_expert_scale=scale)[1]))
            moved = tokens * experts * 4 + tokens * k * 8 + experts * 4
            floor = moved / bandwidth * 1e3
            rows.append({"tokens": tokens, "experts": experts, "top_k": k, "ms": ours, "kernel_ms": kernel,
                         "host_us": host, "torch_ms": ref,
                         "floor_ms": floor, "pct_of_floor": 100 * floor / ours, "speedup": ref / ours,
                         "ids_equal_reference": same, "launch": repr(launch)})
            print(f"routing E={experts:3d} K={k} T={tokens:8d}: {ours:.4f} ms (kernel {kernel:.4f}, host {host:.1f} us), "
                  f"floor {floor:.4f} ms "
                  f"({100 * floor / ours:.0f}%), torch {ref:.3f} ms, ids equal: {same}", flush=True)
    return rows


def sweep_routing(bandwidth: float) -> list[dict[str, Any]]:
    """Every ROUTING_SWEEP launch at T = 2^20."""
    rows = []
    for (experts, k), shapes in ROUTING_SWEEP.items():
        logits, knobs, scale = routing_inputs(2**20, experts, k)
        floor = (logits.numel() * 4 + logits.shape[0] * k * 8) / bandwidth * 1e3
        for block_t, warps in shapes:
            launch = RouteLaunch(block_t, warps, register_cap(4, warps, knobs.variant))
            ms = median_ms(partial(launch_route, logits, knobs, per_expert_scale=scale, launch=launch))
            rows.append({"experts": experts, "top_k": k, "launch": repr(launch), "ms": ms,
                         "pct_of_floor": 100 * floor / ms})
            print(f"routing sweep E={experts} K={k} {launch}: {ms:.4f} ms ({100 * floor / ms:.0f}%)", flush=True)
    return rows


def sweep_small_routing() -> list[dict[str, Any]]:
    """Every ROUTING_SMALL_SWEEP launch at ROUTING_SMALL_AT tokens, (E, K) = (128, 8): call and kernel time."""
    rows = []
    for tokens in ROUTING_SMALL_AT:
        logits, knobs, scale = routing_inputs(tokens, 128, 8)
        for block_t, warps in ROUTING_SMALL_SWEEP:
            launch = RouteLaunch(block_t, warps, register_cap(4, warps, knobs.variant))
            call = partial(launch_route, logits, knobs, per_expert_scale=scale, launch=launch)
            ms, kernel = median_ms(call), graph_ms(call)
            rows.append({"tokens": tokens, "launch": repr(launch), "ms": ms, "kernel_ms": kernel})
            print(f"routing small sweep T={tokens} {block_t}x{warps}: {ms:.4f} ms (kernel {kernel:.4f})", flush=True)
    return rows


def grouped_mm_experts(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, gate_up: torch.Tensor,
                       down: torch.Tensor, activation: str) -> torch.Tensor:
    """transformers' grouped_mm experts path, step for step: sort pairs by expert, gather, two grouped
    products around the activation, weight, restore the pair order, sum over the K picks."""
    tokens, k = ids.shape
    experts = gate_up.shape[0]
    flat = ids.reshape(-1)
    sorted_ids, order = torch.sort(flat)
    counts = torch.histc(sorted_ids.int(), bins=experts, min=0, max=experts - 1)
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
    gate, up = F.grouped_mm(x[order // k], gate_up.transpose(-2, -1), offs=offs).chunk(2, dim=-1)
    y = F.grouped_mm(ACTIVATION_FNS[activation](gate) * up, down.transpose(-2, -1), offs=offs)
    y = y * weights.reshape(-1)[order, None].to(y.dtype)
    unsorted = torch.empty_like(y)
    unsorted[order] = y
    return unsorted.view(tokens, k, -1).sum(dim=1).to(x.dtype)


def moe_inputs(tokens: int, experts: int, k: int, hidden: int, width: int) -> tuple[torch.Tensor, ...]:
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    gate_up = (torch.randn(experts, 2 * width, hidden, device="cuda") / math.sqrt(hidden)).bfloat16()
    down = (torch.randn(experts, hidden, width, device="cuda") / math.sqrt(width)).bfloat16()
    logits = torch.randn(tokens, experts, device="cuda")
    weights, ids = torch_route(logits, RoutingKnobs("softmax_topk", k, renormalize=True))
    return x, weights, ids, gate_up, down


def bench_moe(bandwidth: float) -> list[dict[str, Any]]:
    rows = []
    for model, (experts, k, hidden, width, act) in MODELS.items():
        for tokens in MOE_TOKENS:
            inputs = moe_inputs(tokens, experts, k, hidden, width)
            args = inputs + (act,)
            flops = 6 * tokens * k * hidden * width
            ours_out = launch_experts(*args)
            grouped_out = grouped_mm_experts(*args)
            err = ((ours_out.float() - grouped_out.float()).abs().max() / grouped_out.float().abs().max()).item()
            ours = median_ms(partial(launch_experts, *args))
            kernel = graph_ms(partial(launch_experts, *args))
            host = host_us(partial(launch_experts, *args), calls=50)
            # The routed experts' weights read once: what a decode step cannot go below.
            weights_floor = inputs[2].unique().numel() * 3 * hidden * width * 2 / bandwidth * 1e3
            grouped = median_ms(partial(grouped_mm_experts, *args))
            eager = median_ms(partial(eager_experts_forward, *args))
            cfg = default_config(tokens * k, experts)
            rows.append({"model": model, "tokens": tokens, "ms": ours, "kernel_ms": kernel, "host_us": host,
                         "weights_floor_ms": weights_floor, "grouped_mm_ms": grouped, "eager_ms": eager,
                         "tflops": flops / ours * 1e-9, "grouped_mm_tflops": flops / grouped * 1e-9,
                         "eager_tflops": flops / eager * 1e-9, "vs_grouped_mm": grouped / ours,
                         "max_rel_diff_vs_grouped_mm": err, "config": repr(cfg)})
            print(f"moe {model} T={tokens}: ours {ours:.3f} ms ({flops / ours * 1e-9:.0f} TFLOP/s; kernels {kernel:.3f} ms, "
                  f"host {host:.0f} us, weights floor {weights_floor:.3f} ms), grouped_mm "
                  f"{grouped:.3f} ms, eager {eager:.3f} ms, x{grouped / ours:.2f} vs grouped_mm, diff {err:.1e}",
                  flush=True)
            del inputs, args, ours_out, grouped_out
            torch.cuda.empty_cache()
    return rows


def sweep_moe() -> list[dict[str, Any]]:
    found = []
    for model, token_counts in MOE_SWEEP_AT.items():
        experts, k, hidden, width, act = MODELS[model]
        for tokens in token_counts:
            args = moe_inputs(tokens, experts, k, hidden, width) + (act,)
            flops = 6 * tokens * k * hidden * width
            for name, cfg in MOE_SWEEP.items():
                try:
                    ms = median_ms(partial(launch_experts, *args, config=cfg))
                except Exception as exc:  # a tile that does not fit this GPU's shared memory, say
                    found.append({"model": model, "tokens": tokens, "config": name,
                                  "error": f"{type(exc).__name__}: {exc}"})
                    continue
                found.append({"model": model, "tokens": tokens, "config": name, "ms": ms, "tflops": flops / ms * 1e-9})
                print(f"moe sweep {model} T={tokens} {name}: {ms:.3f} ms ({flops / ms * 1e-9:.0f} TFLOP/s)", flush=True)
    return found


def host_profile() -> None:
    """Where the launch path's host time goes: cProfile over 500 calls of a small routing and a decode MoE."""
    import cProfile
    import pstats

    logits, knobs, scale = routing_inputs(1024, 128, 8)
    x, weights, ids, gate_up, down = moe_inputs(1, *MODELS["Gemma4-26B-A4B"][:4])
    calls = {"route T=1024 E=128 K=8": partial(launch_route, logits, knobs, per_expert_scale=scale),
             "fused MoE Gemma4 T=1": partial(launch_experts, x, weights, ids, gate_up, down, "gelu_tanh")}
    for name, call in calls.items():
        call()
        torch.cuda.synchronize()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(500):
            call()
        profiler.disable()
        torch.cuda.synchronize()
        print(f"host profile: {name}, 500 calls", flush=True)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Device: {result['device']}; torch {result['torch']}, triton {result['triton']}; copy bandwidth "
             f"{result['copy_bandwidth_tb_s']:.2f} TB/s (read + written).", "",
             "| E | K | T | ms | kernel ms | host µs | floor ms | % of floor | torch ms | speed-up | launch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["routing"]:
        lines.append(f"| {r['experts']} | {r['top_k']} | {r['tokens']} | {r['ms']:.4f} | {r['kernel_ms']:.4f} | "
                     f"{r['host_us']:.0f} | {r['floor_ms']:.4f} | {r['pct_of_floor']:.0f}% | {r['torch_ms']:.3f} | "
                     f"{r['speedup']:.0f}× | {r['launch']} |")
    lines += ["", "| model | T | ours ms | TFLOP/s | kernels ms | host µs | weights floor ms | grouped_mm ms | TFLOP/s | "
              "eager ms | vs grouped_mm |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["moe"]:
        lines.append(f"| {r['model']} | {r['tokens']} | {r['ms']:.3f} | {r['tflops']:.0f} | {r['kernel_ms']:.3f} | "
                     f"{r['host_us']:.0f} | {r['weights_floor_ms']:.3f} | {r['grouped_mm_ms']:.3f} | "
                     f"{r['grouped_mm_tflops']:.0f} | {r['eager_ms']:.3f} | {r['vs_grouped_mm']:.2f}× |")
    return "\n".join(lines)


def _dump(result: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the JSON results")
    parser.add_argument("--sweep", action="store_true", help="also time alternative launch configurations")
    parser.add_argument("--host-profile", action="store_true", help="only profile the launch path's host time")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench.kernels needs a CUDA device")
    if not hasattr(F, "grouped_mm"):
        raise SystemExit(f"torch {torch.__version__} has no torch.nn.functional.grouped_mm")
    if args.host_profile:
        host_profile()
        return
    start = time.perf_counter()
    bandwidth = copy_bandwidth()
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "triton": triton.__version__, "python": platform.python_version(),
                              "copy_bandwidth_tb_s": bandwidth / 1e12}
    if args.sweep:
        result["routing_sweep"] = sweep_routing(bandwidth)
    result["routing"] = bench_routing(bandwidth)
    _dump(result, args.out)  # each stage is kept even if a later one runs out of time
    if args.sweep:
        result["routing_small_sweep"] = sweep_small_routing()
        _dump(result, args.out)
    result["moe"] = bench_moe(bandwidth)
    result["seconds"] = time.perf_counter() - start
    _dump(result, args.out)
    print(markdown(result), flush=True)
    if args.sweep:
        result["moe_sweep"] = sweep_moe()
        _dump(result, args.out)


if __name__ == "__main__":
    main()
