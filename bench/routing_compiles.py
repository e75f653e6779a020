"""The routing kernels one routing-parity case compiles, counted and (optionally) compiled (a script, not a test).

    python -m bench.routing_compiles FAMILY... [--examples 1000] [--compile]

Draws a case's examples as routing-parity draws them for the family's routing variant (Hypothesis's generation phase
only) and counts the distinct kernels their launches need on a GPU: the launch's compile-time arguments plus Triton's
specialisation of each integer argument it specialises (a value of 1, a multiple of 16). `--compile` also compiles
each for sm_90 on this CPU (no GPU needed) and reports the seconds: on a GPU a case pays that once per worker, before
its Triton cache holds the kernels (bench/README.md, "nightly step").
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["TRITON_INTERPRET"] = "0"  # the GPU's launches and kernels, compiled here without one

import torch  # noqa: E402
import triton  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import reference.triton.routing as routing  # noqa: E402
from harness.families import get_family  # noqa: E402
from harness.strategies.routing_inputs import RoutingExample, routing_examples  # noqa: E402

POINTER = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float64: "*fp64"}
SIGNATURE = {"bias_ptr": "*fp32", "scale_ptr": "*fp32", "w_ptr": "*fp32", "ids_ptr": "*i32", "T": "i32", "E": "i32",
             "K": "i32", "stride_t": "i32", "stride_e": "i32", "scaling_factor": "fp32", "group_size": "i32",
             "n_group": "i32", "topk_group": "i32"}


def _specialised(name: str, value: int) -> str:
    """How Triton specialises the integer argument `name` at `value` ("" where it does not)."""
    if name in routing.RUN_TIME_SIZES:
        return ""
    return "1" if value == 1 else "16" if value % 16 == 0 else ""


def kernel_key(ex: RoutingExample) -> tuple:
    """What selects the compiled kernel of `ex`'s launch: its constexprs, dtype, warps and integer specialisation."""
    logits, knobs = ex.logits, ex.knobs
    tokens, experts = logits.shape
    launch = routing.default_launch(experts, logits.element_size(), tokens, knobs.variant)
    constexprs = routing.kernel_constexprs(experts, logits.element_size(), knobs, launch)
    ints = {"T": tokens, "E": experts, "K": knobs.top_k, "stride_t": logits.stride(0), "stride_e": logits.stride(1),
            **dict(zip(("group_size", "n_group", "topk_group"), routing.group_arguments(experts, knobs), strict=True))}
    return (logits.dtype, launch.num_warps, tuple(constexprs.items()),
            tuple(_specialised(n, v) for n, v in ints.items()))


def drawn_keys(family: str, examples: int) -> set[tuple]:
    """The kernel keys of `examples` routing-parity draws for `family`'s routing variant."""
    keys: set[tuple] = set()

    @settings(max_examples=examples, phases=[Phase.generate], suppress_health_check=list(HealthCheck),
              database=None, deadline=None)
    @given(routing_examples((get_family(family).spec.routing.variant,)))
    def draw(ex: RoutingExample) -> None:
        keys.add(kernel_key(ex))

    draw()
    return keys


def unspecialised(keys: set[tuple]) -> set[tuple]:
    """The keys with Triton's integer specialisation left out."""
    return {(dtype, warps, constexprs) for dtype, warps, constexprs, _ in keys}


def compile_seconds(keys: set[tuple]) -> float:
    """Seconds to compile for sm_90 each kernel of `keys` once, whatever its specialisations."""
    start = time.perf_counter()
    for dtype, warps, constexprs in unspecialised(keys):
        signature = {"logits_ptr": POINTER[dtype], **SIGNATURE, **{name: "constexpr" for name, _ in constexprs}}
        triton.compile(ASTSource(fn=routing._route_kernel, signature=signature, constexprs=dict(constexprs)),
                       target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, "maxnreg": routing.register_cap(
                           dtype.itemsize, warps, dict(constexprs)["VARIANT"])})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("families", nargs="+")
    parser.add_argument("--examples", type=int, default=1000, help="examples per case (the nightly profile's 1000)")
    parser.add_argument("--compile", action="store_true", help="also compile each kernel for sm_90 and time it")
    args = parser.parse_args()
    for family in args.families:
        keys = drawn_keys(family, args.examples)
        line = f"{family}: {len(keys)} kernels over {args.examples} examples ({len(unspecialised(keys))} unspecialised)"
        if args.compile:
            line += f"; those compiled for sm_90 in {compile_seconds(keys):.1f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
