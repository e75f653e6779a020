"""Per-dtype tolerances (torch.testing.assert_close defaults, NOTES §6); the comparisons are `harness.assertions`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
# Routing weights: float32 outputs of float32 arithmetic on both sides; the oracle runs in float64.
WEIGHT_TOLERANCE = Tolerance(1e-5, 1e-6)


def tolerance_for(dtype: torch.dtype, overrides: dict[torch.dtype, Tolerance] | None = None) -> Tolerance:
    """The tolerance for `dtype`: a scoped override if given, else the assert_close default."""
    if overrides and dtype in overrides:
        return overrides[dtype]
    return DEFAULT_TOLERANCES.get(dtype, Tolerance(0.0, 0.0))

# Whole-model logits, float32 on both sides: rounding compounds over the layers (attention, norms, every expert), so
# each element may also differ by MODEL_LOGITS_BOUND times the largest |logit|; a wrong tensor anywhere moves the
# logits by their own size.
MODEL_LOGITS_TOLERANCE = Tolerance(1e-4, 1e-5)
MODEL_LOGITS_BOUND = 1e-4
