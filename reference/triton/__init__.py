"""Triton kernels for routing and the fused MoE, checked against the torch reference.

Where they run is decided once, here, before the kernel modules are imported: Triton reads
`TRITON_INTERPRET` when `@triton.jit` decorates a function (at the kernel module's import), not when a
kernel is launched. With no CUDA device and the variable unset, this package sets it to "1", so the
kernels run in Triton's interpreter on CPU tensors (how CI runs them). Triton may have been imported
earlier (transformers imports it) while the variable was unset; its standard library (`tl.max`, ...)
is then compiled-only, which is why the kernels use `core_ops` instead. `KERNEL_DEVICE` is where
kernel inputs must live.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from triton import knobs  # noqa: E402 - after TRITON_INTERPRET is settled

# Read through Triton's own knob, so this agrees with what `@triton.jit` decides.
INTERPRETED = bool(knobs.runtime.interpret)
KERNEL_DEVICE = torch.device("cpu") if INTERPRETED else torch.device("cuda")


def check_device(*tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor lives on KERNEL_DEVICE's type (checked before any launch)."""
    for t in tensors:
        if t.device.type != KERNEL_DEVICE.type:
            mode = "interpreted (TRITON_INTERPRET=1)" if INTERPRETED else "compiled for CUDA"
            raise ValueError(f"the Triton kernels are {mode} and take {KERNEL_DEVICE.type} tensors; "
                             f"got a tensor on {t.device}")


def _interpreter_loop_bound_bug() -> str:
    """Why this Triton interpreter cannot run the kernels, or "": before triton-lang/triton#9171 was fixed, it
    turned a kernel's integer argument used as a loop bound into a Python int by int() of a one-element
    array, which numpy 2.4 refuses (the kernels loop up to run-time sizes, so as not to compile per size)."""
    if not INTERPRETED or np.lib.NumpyVersion(np.__version__) < "2.4.0":
        return ""
    from triton.runtime import interpreter

    if "lambda self: int(self.handle.data))" not in Path(interpreter.__file__).read_text():
        return ""
    import triton

    return (f"Triton {triton.__version__}'s interpreter cannot run these kernels with numpy {np.__version__}: it "
            f"converts a kernel's integer loop bound by int() of a one-element array, which numpy 2.4 refuses "
            f"(triton-lang/triton#9171). Use a Triton with that fix (3.9 works), numpy < 2.4, or a CUDA device.")


INTERPRETER_BUG = _interpreter_loop_bound_bug()


def launch_context() -> contextlib.AbstractContextManager:
    """Wrap launches: the kernels rely on IEEE inf/NaN arithmetic (the sigmoid of -1e30 is 0, -inf logits),
    which numpy, running the interpreter, would report as warnings. Raises RuntimeError, before any launch,
    where the interpreter cannot run the kernels (INTERPRETER_BUG says why)."""
    if INTERPRETER_BUG:
        raise RuntimeError(INTERPRETER_BUG)
    if INTERPRETED:
        return np.errstate(over="ignore", invalid="ignore", divide="ignore")
    return contextlib.nullcontext()
