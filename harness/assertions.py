"""Assertion helpers shared by the checks and the harness's own tests; every one fails in one form.

A failure reads `<where>: <what went wrong>; observed <observed>, expected <expected>` and is raised as
PropertyViolation whose details hold `where`, `observed` and `expected` (and what locates the failure,
such as the element index), with `tolerance` naming the tolerance that applied (None: exact).
The per-dtype tolerance table itself is `harness.tolerances`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import torch

from harness.tolerances import Tolerance
from harness.verdict import PropertyViolation
from reference.config import RoutingKnobs
from reference.routing import selection_scores

# Selection ties: a picked score may sit below an unpicked one by this fraction of the token's largest |score|.
SELECTION_SLACK = 1e-6


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def fail(where: str, what: str, observed: Any, expected: Any, tolerance: Tolerance | str | None = None,
         **details: Any) -> NoReturn:
    """Raise the PropertyViolation of the one fixed form (see the module docstring)."""
    raise PropertyViolation(f"{where}: {what}; observed {_show(observed)}, expected {_show(expected)}",
                            tolerance=None if tolerance is None else str(tolerance),
                            where=where, observed=observed, expected=expected, **details)


@contextmanager
def located(where: str) -> Iterator[None]:
    """A PropertyViolation raised inside names `where` first (same tolerance and details)."""
    try:
        yield
    except PropertyViolation as v:
        raise PropertyViolation(f"{where}: {v.message}", tolerance=v.tolerance, **v.details) from None


def _f64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().double().cpu()


def _first_difference(bad: torch.Tensor, actual: torch.Tensor, expected: torch.Tensor, where: str, beyond: str,
                      allowed: torch.Tensor | None = None) -> None:
    """Fail at the first element `bad` marks, counting them all; nothing when none is marked."""
    if not bad.any():
        return
    idx = tuple(int(i) for i in bad.nonzero()[0])
    allowance = "" if allowed is None else f"; allowed difference {allowed[idx].item():.3g}"
    worst = (actual - expected).abs().nan_to_num(float("inf")).max().item()
    fail(where, f"{int(bad.sum())} of {bad.numel()} elements differ beyond {beyond} (first at {idx}{allowance}; "
                f"max abs diff {worst:.3g})", actual[idx].item(), expected[idx].item(), beyond, index=idx)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance, where: str) -> None:
    """Elementwise |actual - expected| <= atol + rtol·|expected| in float64, NaN equal to NaN; shapes equal."""
    if actual.shape != expected.shape:
        fail(where, "shapes differ", tuple(actual.shape), tuple(expected.shape), tol)
    a, e = _f64(actual), _f64(expected)
    _first_difference(~torch.isclose(a, e, rtol=tol.rtol, atol=tol.atol, equal_nan=True), a, e, where, str(tol))


def assert_close_to_terms(actual: torch.Tensor, expected: torch.Tensor, terms: torch.Tensor, tol: Tolerance,
                          where: str) -> None:
    """Elementwise |actual - expected| <= atol + rtol·(|expected| + terms), NaN failing: a sum that cancels
    to near zero is judged against the size of the terms that cancelled."""
    a, e = _f64(actual), _f64(expected)
    allowed = tol.atol + tol.rtol * (e.abs() + _f64(terms))
    _first_difference(~((a - e).abs() <= allowed), a, e, where, f"{tol} with rtol applied to |expected| + |terms|",
                      allowed)


def assert_close_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, tol: Tolerance, where: str,
                        bound_name: str) -> None:
    """Elementwise |actual - expected| <= atol + rtol·|expected| + bound in float64; shapes equal. As in
    assert_close, equal elements (infinities included) and NaN facing NaN pass; NaN facing a number fails.

    `bound` (>= 0, broadcastable to expected) is an absolute error bound derived by the caller from the
    computation compared (named by `bound_name` in the failure). Guarantees: whatever assert_close allows
    with `tol` is allowed here too (the bound only widens it, element by element), and an element whose
    difference exceeds atol + rtol·|expected| + bound fails, reporting the allowed difference there.
    """
    if actual.shape != expected.shape:
        fail(where, "shapes differ", tuple(actual.shape), tuple(expected.shape), tol)
    a, e = _f64(actual), _f64(expected)
    allowed = (tol.atol + tol.rtol * e.abs() + _f64(bound)).expand_as(e)
    same = (a == e) | (a.isnan() & e.isnan())
    _first_difference(~((a - e).abs() <= allowed) & ~same, a, e, where, f"{tol} + {bound_name}", allowed)


def assert_valid_routing(logits: torch.Tensor, knobs: RoutingKnobs, bias: torch.Tensor | None, ids: torch.Tensor,
                         k: int) -> None:
    """`ids` are a valid top-k of the variant's selection scores (`assert_valid_selection`); for a grouped variant,
    of the groups the router kept where groups tie at the keep boundary (within SELECTION_SLACK)."""
    assert_valid_selection(selection_scores(logits, knobs, bias, picked=ids, slack=SELECTION_SLACK), ids, k)


def assert_valid_selection(scores: torch.Tensor, ids: torch.Tensor, k: int, where: str = "routing") -> None:
    """No unpicked expert scores above a picked one, ties allowed within SELECTION_SLACK of the largest |score|."""
    picked = scores.gather(-1, ids.long())
    unpicked = scores.scatter(-1, ids.long(), float("-inf"))
    slack = SELECTION_SLACK * scores.abs().nan_to_num(0, 0, 0).amax(-1)
    worse = picked.amin(-1) < unpicked.amax(-1) - slack
    if worse.any():
        tok = int(worse.nonzero()[0])
        fail(where, f"token {tok} picks an expert that scores below one it left out", sorted(ids[tok].tolist()),
             scores[tok].argsort(descending=True, stable=True)[:k].tolist(),
             f"ties within {SELECTION_SLACK:g} of the largest |score|", token=tok)
