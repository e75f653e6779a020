"""Reductions and helpers for the kernels that run wherever the kernels were decorated to run.

`tl.max`, `tl.sum`, `tl.zeros`, `tl.sigmoid`, `tl.cdiv` are functions of Triton's standard library,
which `import triton` decorates once, interpreted or compiled by what TRITON_INTERPRET said at that
moment; core builtins (`tl.reduce`, `tl.maximum`, `tl.full`, ...) are patched by the interpreter at
each launch. The kernels call only these helpers and core builtins, so they run in the interpreter even
when something (transformers, torch) imported Triton before TRITON_INTERPRET was set.

The reductions pass the standard library's own combine functions to `tl.reduce`: compiled, that is
exactly `tl.max`/`tl.min`/`tl.sum`; interpreted, Triton recognises them and reduces with numpy instead
of calling the combine function element by element (about 100× slower).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def max_along(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._elementwise_max)


@triton.jit
def min_along(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._elementwise_min)


@triton.jit
def sum_along(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))
