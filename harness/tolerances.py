"""Per-dtype tolerances (torch.testing.assert_close defaults, NOTES §6) and the comparison that names them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.verdict import PropertyViolation


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def __str__(self) -> str:
        return f"rtol={self.rtol:g}, atol={self.atol:g}"


DEFAULT_TOLERANCES = {
    torch.float16: Tolerance(1e-3, 1e-5),
    torch.bfloat16: Tolerance(1.6e-2, 1e-5),
    torch.float32: Tolerance(1.3e-6, 1e-5),
    torch.float64: Tolerance(1e-7, 1e-7),
}


def tolerance_for(dtype: torch.dtype, overrides: dict[torch.dtype, Tolerance] | None = None) -> Tolerance:
    """The tolerance for `dtype`: a scoped override if given, else the assert_close default."""
    if overrides and dtype in overrides:
        return overrides[dtype]
    return DEFAULT_TOLERANCES.get(dtype, Tolerance(0.0, 0.0))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance, what: str) -> None:
    """Raise PropertyViolation naming `what`, the tolerance, and the worst element when not close."""
    if actual.shape != expected.shape:
        raise PropertyViolation(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}",
                                tolerance=str(tol), actual_shape=tuple(actual.shape),
                                expected_shape=tuple(expected.shape))
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~torch.isclose(a, e, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        diff = (a - e).abs().nan_to_num(float("inf"))
        raise PropertyViolation(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ beyond {tol}; "
            f"first at {idx}: {a[idx].item():.6g} vs expected {e[idx].item():.6g}; max abs diff {diff.max().item():.3g}",
            tolerance=str(tol), index=idx, actual=a[idx].item(), expected=e[idx].item(),
        )
