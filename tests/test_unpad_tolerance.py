"""unpad-before-add's tolerance is derived from the computation: rounding-order noise passes, errors above it fail.

The examples in FORMER_FALSE_POSITIVES are counterexamples `moe-harness run --target reference --check
unpad-before-add --profile ci` reported against the reference itself under the plain fp16 rtol of 1e-3.
"""

from __future__ import annotations

import copy

import pytest
import torch

from harness.assertions import assert_close, assert_close_within
from harness.checks.unpad_before_add import check_unpad, example_inputs, rounding_bound
from harness.families import get_family
from harness.strategies.padding import PaddedDim, PaddingExample
from harness.tolerances import Tolerance, tolerance_for
from harness.verdict import PropertyViolation
from reference.moe import MoEBlock, PaddedMoERunner, pad_to

# family, hidden, alignment, dtype, tokens, seed
FORMER_FALSE_POSITIVES = [
    ("gemma4", 8001, 64, torch.float16, 6, 125),
    ("qwen2_moe", 679, 64, torch.float16, 5, 679),
    ("deepseek_v3", 679, 64, torch.float16, 5, 679),
    ("qwen2_moe", 5044, 256, torch.float16, 2, 1654),
]
# One example per dtype and family with shared experts, covering each part the bound models: llama4_text
# weights the input, qwen2_moe gates the shared experts, axk1 RMS-norms the output, glm5_next clamps its
# SwiGLU, nemotron_h has non-gated relu2 experts.
COVERAGE = [(family, 2625, 64, dtype, 3, 7)
            for family in ("gemma4", "qwen2_moe", "deepseek_v3", "llama4_text", "axk1", "glm5_next", "nemotron_h")
            for dtype in (torch.float16, torch.bfloat16, torch.float32)]


def _example(hidden: int, alignment: int, dtype: torch.dtype, tokens: int, seed: int) -> PaddingExample:
    return PaddingExample(PaddedDim(hidden, alignment, dtype), tokens, seed)


def _exact(block: MoEBlock, x: torch.Tensor) -> torch.Tensor:
    """block(x) in float64 from the same stored weights and the same router logits (so the same routing)."""
    with torch.no_grad():
        return copy.deepcopy(block).double()(x.double(), router_logits=block.router_logits(x).double())


def _allowed(block: MoEBlock, x: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """What check_unpad allows at each element: the dtype's atol + rtol·|expected| + twice the rounding bound."""
    tol = tolerance_for(x.dtype)
    return tol.atol + tol.rtol * expected.double().abs() + 2 * rounding_bound(block, x)


@pytest.mark.parametrize("case", FORMER_FALSE_POSITIVES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_reference_runner_passes_where_the_plain_rtol_reported_it(case) -> None:
    family, *rest = case
    check_unpad(PaddedMoERunner, get_family(family), _example(*rest))


@pytest.mark.parametrize("case", COVERAGE, ids=lambda c: f"{c[0]}-{c[3]}".replace("torch.", ""))
def test_bound_covers_the_blocks_own_rounding_and_the_padded_runners(case) -> None:
    """Each side is within rounding_bound of the exact value: that is what makes twice it a bound on their
    difference (checked here on the reference in every dtype, padded and not)."""
    family, *rest = case
    example = _example(*rest)
    block, x = example_inputs(get_family(family), example)
    bound, exact = rounding_bound(block, x), _exact(block, x)
    with torch.no_grad():
        for name, out in (("block", block(x)), ("padded runner", PaddedMoERunner(block, example.dim.elements)(x))):
            ratio = ((out.double() - exact).abs() / bound).max().item()
            assert ratio <= 1.0, f"{name} in {x.dtype} is {ratio:.3g}× the rounding bound from the exact value"


def test_correctly_rounded_result_passes_though_the_plain_rtol_rejects_it() -> None:
    """The exact result rounded once to fp16 is as good as any fp16 implementation can be; the plain rtol
    (about two unit roundoffs on a value that is a sum) rejected it, the derived bound accepts it."""
    family, *rest = FORMER_FALSE_POSITIVES[0]
    example = _example(*rest)

    def correctly_rounded(block: MoEBlock, alignment: int):
        return lambda x: _exact(block, x).to(x.dtype)

    check_unpad(correctly_rounded, get_family(family), example)
    block, x = example_inputs(get_family(family), example)
    with torch.no_grad(), pytest.raises(PropertyViolation):
        assert_close(_exact(block, x).to(x.dtype), block(x), tolerance_for(x.dtype), "plain rtol")


def _one_element_at(step: int):
    """A runner returning block(x) with element [0, 0] moved to the dtype value next to expected + allowed:
    step +1 the first one beyond what the check allows, -1 the last one within it."""
    def runner(block: MoEBlock, alignment: int):
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                out = block(x).clone()
            e, allowed = out[0, 0].double(), _allowed(block, x, out)[0, 0]
            v = (e + allowed).to(x.dtype)
            toward = torch.tensor(step * float("inf"), dtype=x.dtype)
            while (step > 0) == bool((v.double() - e) <= allowed):
                v = torch.nextafter(v, toward)
            out[0, 0] = v
            return out
        return forward
    return runner


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_an_error_just_above_the_bound_fails_and_just_below_passes(dtype: torch.dtype) -> None:
    family = get_family("qwen2_moe")
    example = _example(679, 64, dtype, 5, 679)
    check_unpad(_one_element_at(-1), family, example)
    with pytest.raises(PropertyViolation, match=r"1 of 3395 elements differ beyond .*rounding bound") as info:
        check_unpad(_one_element_at(+1), family, example)
    assert info.value.details["index"] == (0, 0)


def _trims_wrong_end(block: MoEBlock, alignment: int):
    runner = PaddedMoERunner(block, alignment)

    def forward(x: torch.Tensor) -> torch.Tensor:
        hidden = x.shape[-1]
        routed = runner.routed_padded(x, block.router_logits(x), pad_to(hidden, alignment))[..., -hidden:]
        return block.shared(x) + routed
    return forward


def _ignores_shared_gate(block: MoEBlock, alignment: int):
    runner = PaddedMoERunner(block, alignment)

    def forward(x: torch.Tensor) -> torch.Tensor:
        hidden = x.shape[-1]
        routed = runner.routed_padded(x, block.router_logits(x), pad_to(hidden, alignment))[..., :hidden]
        return block.shared_experts(x) + routed
    return forward


@pytest.mark.parametrize("broken", [_trims_wrong_end, _ignores_shared_gate], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("case", FORMER_FALSE_POSITIVES[1:2] + FORMER_FALSE_POSITIVES[3:],
                         ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_broken_runners_are_still_caught_on_the_former_false_positives(broken, case) -> None:
    family, *rest = case
    with pytest.raises(PropertyViolation, match="padded runner output vs shared"):
        check_unpad(broken, get_family(family), _example(*rest))


def test_assert_close_within_widens_assert_close_by_the_bound_only() -> None:
    tol = Tolerance(1e-3, 0.0)
    expected = torch.tensor([1.0, 0.0, float("inf"), float("nan")], dtype=torch.float64)
    bound = torch.tensor([0.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert_close_within(torch.tensor([1.001, 0.5, float("inf"), float("nan")], dtype=torch.float64),
                        expected, bound, tol, "out", "b")
    with pytest.raises(PropertyViolation, match=r"out: 1 of 4 elements differ beyond rtol=0.001, atol=0 \+ b "
                                                r"\(first at \(1,\); allowed difference 0.5"):
        assert_close_within(torch.tensor([1.0, 0.5001, float("inf"), float("nan")], dtype=torch.float64),
                            expected, bound, tol, "out", "b")
    with pytest.raises(PropertyViolation, match=r"first at \(0,\)"):
        assert_close_within(torch.tensor([1.0011, 0.0, float("inf"), float("nan")], dtype=torch.float64),
                            expected, bound, tol, "out", "b")
    with pytest.raises(PropertyViolation, match=r"first at \(3,\)"):
        assert_close_within(torch.tensor([1.0, 0.0, float("inf"), 0.0], dtype=torch.float64),
                            expected, bound, tol, "out", "b")
    with pytest.raises(PropertyViolation, match="shapes differ"):
        assert_close_within(torch.zeros(3), torch.zeros(4), torch.zeros(()), tol, "out", "b")
