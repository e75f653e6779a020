"""The Triton kernels behind `reference-triton`: parity with the torch reference, inputs rejected before
launch, and the checks catching deliberately broken kernels.

Without a GPU the kernels run in Triton's interpreter on CPU tensors at small shapes (fp32 and fp16;
bf16 routing too, which has no tl.dot). Tests marked `gpu` run realistic shapes on CUDA in every dtype
and are skipped without a device.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import reference.triton as rt  # first: it settles TRITON_INTERPRET before Triton is imported
import reference.triton.fused_moe as fused_moe_module
import reference.triton.routing as routing_module
from harness.assertions import assert_close, assert_close_to_terms, assert_valid_selection
from harness.checks import CHECKS
from harness.checks.moe_output_parity import expected_output
from harness.engine import run_case
from harness.families import get_family
from harness.targets import load_target
from harness.targets.base import FusedMoECap, RoutingCap
from harness.targets.triton import on_device
from harness.tolerances import WEIGHT_TOLERANCE, tolerance_for
from harness.verdict import ErrorKind, Status
from reference.config import RoutingKnobs
from reference.moe import experts_forward as torch_experts_forward
from reference.routing import RoutingInputError, selection_scores, weights_for
from reference.routing import route as torch_route
from reference.triton.align import align_pairs
from reference.triton.fused_moe import experts_forward, experts_forward_with_bug
from reference.triton.routing import RouteLaunch, launch_route, route, route_with_bug

DEVICE = rt.KERNEL_DEVICE
ON_CUDA = DEVICE.type == "cuda"
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not ON_CUDA, reason="no CUDA device")
# bf16 tl.dot is garbage in the interpreter (NOTES §8); routing has no dot and takes bf16 anywhere.
MOE_DTYPES = (torch.float32, torch.bfloat16, torch.float16) if ON_CUDA else (torch.float32, torch.float16)
LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Variants whose selection score is the float32 logit itself: the ids must equal the reference's exactly.
SELECT_ON_LOGITS = ("gemma4", "topk_softmax", "sigmoid_topk_on_logits")


def knobs_for(name: str, top_k: int, experts: int) -> RoutingKnobs:
    """Knobs for a named variant case: `<variant>` or `<variant>+renorm`."""
    variant, _, extra = name.partition("+")
    kw: dict[str, object] = {"renormalize": extra == "renorm"}
    if variant in ("sigmoid_bias", "grouped"):
        kw.update(scaling_factor=2.5)
    if variant == "grouped":
        n_group = 8 if experts % 8 == 0 else 1
        kw.update(n_group=n_group, topk_group=max(1, n_group // 2))
    return RoutingKnobs(variant, top_k, **kw)  # type: ignore[arg-type]


VARIANT_CASES = ("softmax_topk", "softmax_topk+renorm", "gemma4", "topk_softmax", "sigmoid_bias",
                 "sigmoid_bias+renorm", "grouped+renorm", "sigmoid_topk_on_logits")


def _extras(experts: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(experts, generator=gen) * 0.1, torch.rand(experts, generator=gen) + 0.5


def _logits(tokens: int, experts: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(tokens, experts, generator=gen) * 3).to(dtype).to(DEVICE)


def assert_routes_like_reference(logits: torch.Tensor, knobs: RoutingKnobs, exact_ids: bool = False) -> None:
    """Output types and shapes, a valid top K (tie-aware, float64 scores) and the reference's weights."""
    bias, scale = _extras(logits.shape[1])
    weights, ids = route(logits, knobs, bias=bias, per_expert_scale=scale)
    assert weights.dtype == torch.float32 and ids.dtype == torch.int32
    assert weights.shape == ids.shape == (logits.shape[0], knobs.top_k)
    assert weights.device == ids.device == logits.device
    ids, weights, exact = ids.cpu(), weights.cpu(), logits.cpu().double()
    assert_valid_selection(selection_scores(exact, knobs, bias.double()), ids, knobs.top_k)
    assert_close(weights, weights_for(exact, ids, knobs, scale.double()), WEIGHT_TOLERANCE, "weights")
    if exact_ids:
        want = torch_route(logits.cpu(), knobs, bias=bias, per_expert_scale=scale)[1]
        assert torch.equal(ids, want), "ids differ from the reference's (order included)"


@pytest.mark.parametrize("top_k", [4, 11], ids=lambda k: f"K{k}")  # rounds unrolled (K bucket 4), looped (16)
@pytest.mark.parametrize("dtype", LOGIT_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANT_CASES)
def test_routing_matches_reference(variant: str, dtype: torch.dtype, top_k: int) -> None:
    knobs = knobs_for(variant, top_k, 24)  # E = 24: not a power of two
    assert_routes_like_reference(_logits(37, 24, dtype), knobs, exact_ids=variant.split("+")[0] in SELECT_ON_LOGITS)


# Every variant at two model shapes (E = 160 is no power of two); the other bench shapes for gemma4.
MODEL_SHAPE_CASES = [(v, shape) for v in VARIANT_CASES for shape in ((128, 8), (160, 6))] + [
    ("gemma4", (256, 8)), ("gemma4", (64, 2)), ("topk_softmax", (128, 16))]  # K 16: the rounds loop


@gpu
@needs_cuda
@pytest.mark.parametrize("variant,shape", MODEL_SHAPE_CASES, ids=lambda c: c if isinstance(c, str) else f"E{c[0]}K{c[1]}")
def test_routing_matches_reference_at_model_shapes(variant: str, shape: tuple[int, int]) -> None:
    experts, k = shape
    knobs = knobs_for(variant, k, experts)
    assert_routes_like_reference(_logits(8192 + 3, experts, torch.float32), knobs,
                                 exact_ids=variant.split("+")[0] in SELECT_ON_LOGITS)


@pytest.mark.parametrize("launch", [(1, 1), (4, 2), (16, 4)])
def test_any_launch_layout_routes_alike(launch: tuple[int, int]) -> None:
    logits = _logits(75, 128, torch.float32)
    knobs = knobs_for("gemma4", 8, 128)
    _, scale = _extras(128)
    want = launch_route(logits, knobs, per_expert_scale=scale)
    got = launch_route(logits, knobs, per_expert_scale=scale, launch=RouteLaunch(*launch))
    assert torch.equal(want[1], got[1])
    # Another layout sums the softmax in another order: the last bit may differ (seen on an H100).
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=0)


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("variant", ("gemma4", "softmax_topk+renorm", "sigmoid_bias+renorm"))
def test_routing_16bit_logits_at_model_shapes(variant: str, dtype: torch.dtype) -> None:
    knobs = knobs_for(variant, 8, 128)
    assert_routes_like_reference(_logits(8192, 128, dtype), knobs, exact_ids=variant in SELECT_ON_LOGITS)


def test_ties_break_by_lower_index() -> None:
    knobs = RoutingKnobs("gemma4", 3)
    logits = torch.tensor([[0.5] * 6, [1.0, 2.0, 2.0, 0.0, 2.0, 2.0], [-0.0, 0.0, -1.0, 0.0, -0.0, 3.0]])
    _, ids = route(logits.to(DEVICE), knobs, per_expert_scale=torch.ones(6))
    assert ids.cpu().tolist() == [[0, 1, 2], [1, 2, 4], [5, 0, 1]]


def test_scores_one_ulp_apart_are_still_ordered_exactly() -> None:
    """The packed keys merge scores that differ in their lowest bits; the exact fallback must order them."""
    base = torch.tensor(1.5)
    up = torch.nextafter(base, torch.tensor(2.0))
    # Picks among merged scores (the larger one at the higher index), and merged scores straddling K.
    logits = torch.tensor([[base, up, 0.0, -1.0], [3.0, base, 0.0, up]])
    for k in (1, 2, 3):
        _, ids = route(logits.to(DEVICE), RoutingKnobs("topk_softmax", k))
        assert ids.cpu().tolist() == torch_route(logits, RoutingKnobs("topk_softmax", k))[1].tolist()


@pytest.mark.parametrize("experts", [1, 5, 37])
def test_k_equal_to_e_picks_every_expert_once(experts: int) -> None:
    logits = _logits(9, experts, torch.float32)
    logits[:, 0] = float("-inf")  # a real -inf expert still beats the padded lanes
    weights, ids = route(logits, RoutingKnobs("sigmoid_topk_on_logits", experts))
    assert (ids.cpu().sort(-1).values == torch.arange(experts)).all()
    assert_routes_like_reference(logits, RoutingKnobs("topk_softmax", experts), exact_ids=True)


@gpu  # also compiled: the weights' float64 arithmetic
@pytest.mark.parametrize("variant", ("sigmoid_topk_on_logits+renorm", "sigmoid_bias+renorm", "grouped+renorm"))
def test_sigmoid_weights_where_a_float32_sigmoid_underflows(variant: str) -> None:
    # fp16 logits in (-709, -104): their sigmoid is 0 in float32 but not in float64, so a float32 renormalisation
    # divides 0 by 0 (seen at the nightly: a weight NaN where the reference's is 1).
    gen = torch.Generator().manual_seed(3)
    logits = (-104 - 600 * torch.rand(11, 16, generator=gen)).to(torch.float16).to(DEVICE)
    for k in (1, 3):
        assert_routes_like_reference(logits, knobs_for(variant, k, 16))


def test_non_contiguous_logits() -> None:
    wide = _logits(64, 40, torch.float32)
    for view in (wide[:, ::2], wide.t().contiguous().t(), wide[::3, 5:29]):
        assert not view.is_contiguous()
        assert_routes_like_reference(view, knobs_for("sigmoid_bias+renorm", 3, view.shape[1]))
        assert_routes_like_reference(view, knobs_for("gemma4", 3, view.shape[1]), exact_ids=True)


BAD_ROUTING = {
    "k>e": (torch.zeros(2, 3), RoutingKnobs("softmax_topk", 4), {}, "top_k=4"),
    "k=0": (torch.zeros(2, 3), RoutingKnobs("softmax_topk", 0), {}, "top_k=0"),
    "rank-3": (torch.zeros(2, 3, 4), RoutingKnobs("softmax_topk", 1), {}, "tokens, experts"),
    "int-logits": (torch.zeros(2, 3, dtype=torch.int32), RoutingKnobs("softmax_topk", 1), {}, "floating point"),
    "bias-shape": (torch.zeros(2, 4), RoutingKnobs("sigmoid_bias", 1),
                   {"bias": torch.zeros(5)}, "bias must be"),
    "scale-missing": (torch.zeros(2, 4), RoutingKnobs("gemma4", 1), {}, "per_expert_scale"),
    "scale-shape": (torch.zeros(2, 4), RoutingKnobs("gemma4", 1),
                    {"per_expert_scale": torch.ones(4, 1)}, "per_expert_scale must be"),
    "topk-group": (torch.zeros(2, 4), RoutingKnobs("grouped", 1, n_group=2, topk_group=3), {}, "topk_group=3"),
    "wrong-device": (torch.zeros(2, 4, device="meta"), RoutingKnobs("softmax_topk", 1), {}, "tensors; got a tensor"),
}


@pytest.mark.parametrize("case", BAD_ROUTING)
def test_bad_routing_inputs_rejected_before_launch(case: str) -> None:
    logits, knobs, kwargs, match = BAD_ROUTING[case]
    logits = logits if logits.device.type == "meta" else logits.to(DEVICE)
    # RoutingInputError comes from the validation; a launch would fail with Triton's own errors instead.
    with pytest.raises(RoutingInputError, match=match):
        route(logits, knobs, **kwargs)


def _moe_inputs(tokens: int, experts: int, k: int, hidden: int, width: int, dtype: torch.dtype,
                hot: bool = False, seed: int = 0) -> tuple[torch.Tensor, ...]:
    # Drawn where the kernels run: the model shapes' experts are ~750M numbers, seconds to draw on a CPU.
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen, device=DEVICE)
    gate_up = torch.randn(experts, 2 * width, hidden, generator=gen, device=DEVICE) / hidden**0.5
    down = torch.randn(experts, hidden, width, generator=gen, device=DEVICE) / width**0.5
    logits = torch.randn(tokens, experts, generator=gen, device=DEVICE)
    if hot:
        logits[:, :k] += 100  # every token on the same experts: several blocks of one expert
    weights, ids = torch_route(logits, RoutingKnobs("softmax_topk", k, renormalize=True))
    return x.to(dtype), weights, ids, gate_up.to(dtype), down.to(dtype)


def _biases(experts: int, hidden: int, width: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {"gate_up_bias": torch.randn(experts, 2 * width, generator=gen).to(dtype).to(DEVICE),
            "down_bias": torch.randn(experts, hidden, generator=gen).to(dtype).to(DEVICE)}


def assert_moe_matches_reference(inputs: tuple[torch.Tensor, ...], activation: str, **keywords: Any) -> None:
    x, weights, ids, gate_up, down = inputs
    out = experts_forward(x, weights, ids, gate_up, down, activation, **keywords)
    assert out.dtype == x.dtype and out.shape == x.shape and out.device == x.device
    want, terms = expected_output(x, weights, ids, gate_up, down, activation, keywords)
    assert_close_to_terms(out.cpu(), want.cpu(), terms.cpu(), tolerance_for(x.dtype), f"{activation} output")


@pytest.mark.parametrize("dtype", MOE_DTYPES, ids=str)
@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh", "swiglu_oai", "swiglu_clamp"])
def test_fused_moe_matches_reference(activation: str, dtype: torch.dtype) -> None:
    # H and I are no multiple of the tile depth, E = 6 with K = 3 leaves experts without tokens.
    assert_moe_matches_reference(_moe_inputs(37, 6, 3, 40, 24, dtype), activation)


@pytest.mark.parametrize("dtype", MOE_DTYPES, ids=str)
def test_fused_moe_computes_gpt_oss_experts(dtype: torch.dtype) -> None:
    """GPT-OSS's experts: expert biases, the clamped SwiGLU with its alpha and limit; the inputs scaled so that
    some projections pass the limit (the clamps act)."""
    x, weights, ids, gate_up, down = _moe_inputs(21, 6, 2, 40, 24, dtype)
    assert_moe_matches_reference((x * 6, weights, ids, gate_up, down), "swiglu_oai", glu_alpha=1.702, glu_limit=7.0,
                                 **_biases(6, 40, 24, dtype))
    assert (x.double() * 6 @ gate_up[0].double().T).abs().max() > 7  # the clamps were reached


@pytest.mark.parametrize("dtype", MOE_DTYPES, ids=str)
def test_fused_moe_computes_llama4_experts(dtype: torch.dtype) -> None:
    """Llama 4's experts: each pick's routing weight applied to its input, not its output."""
    assert_moe_matches_reference(_moe_inputs(21, 6, 2, 40, 24, dtype), "silu", weight_on_input=True)


@pytest.mark.parametrize("tokens", [1, 40])
def test_fused_moe_one_hot_expert_and_single_token(tokens: int) -> None:
    assert_moe_matches_reference(_moe_inputs(tokens, 8, 2, 32, 16, torch.float32, hot=True), "silu")


def test_fused_moe_non_contiguous_inputs() -> None:
    x, weights, ids, gate_up, down = _moe_inputs(20, 4, 2, 32, 16, torch.float32)
    x_t = x.t().contiguous().t()
    gate_up_t = gate_up.transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_t.is_contiguous() and not gate_up_t.is_contiguous()
    assert_moe_matches_reference((x_t, weights, ids, gate_up_t, down), "gelu")


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16, torch.float32), ids=str)
@pytest.mark.parametrize("shape", [(512, 128, 8, 2816, 704, "gelu_tanh"), (2048, 128, 8, 2048, 768, "silu"),
                                   (4, 128, 8, 2048, 768, "silu"), (1024, 8, 2, 1024, 3584, "silu")],
                         ids=lambda s: f"T{s[0]}E{s[1]}K{s[2]}H{s[3]}I{s[4]}")
def test_fused_moe_matches_reference_at_model_shapes(shape: tuple, dtype: torch.dtype) -> None:
    tokens, experts, k, hidden, width, activation = shape
    assert_moe_matches_reference(_moe_inputs(tokens, experts, k, hidden, width, dtype), activation)


def _alignment_by_hand(ids: torch.Tensor, experts: int, block_m: int) -> tuple[list[int], list[int]]:
    """The rows and block experts `align_pairs` must give, expert by expert, pairs in flat order."""
    flat = ids.reshape(-1).tolist()
    rows: list[int] = []
    block_expert: list[int] = []
    for e in range(experts):
        mine = [p for p, f in enumerate(flat) if f == e]
        blocks = -(-len(mine) // block_m)
        rows += mine + [len(flat)] * (blocks * block_m - len(mine))
        block_expert += [e] * blocks
    return rows, block_expert


# (tokens, experts, K, block_m): one chunk (counted in place), several chunks, E not a power of two,
# one hot expert (all pairs in few blocks), more experts than pairs.
ALIGN_CASES = [(5, 5, 2, 2), (300, 128, 8, 16), (97, 24, 3, 64), (64, 8, 2, 16), (3, 160, 6, 16)]


@pytest.mark.parametrize("case", ALIGN_CASES, ids=lambda c: "T{}E{}K{}M{}".format(*c))
def test_align_pairs_groups_pairs_by_expert_in_flat_order(case: tuple[int, int, int, int]) -> None:
    tokens, experts, k, block_m = case
    gen = torch.Generator().manual_seed(tokens)
    logits = torch.randn(tokens, experts, generator=gen)
    if tokens == 64:
        logits[:, :k] += 100
    ids = logits.topk(k, dim=-1).indices.to(torch.int32)
    rows, block_expert = align_pairs(ids.to(DEVICE), num_experts=experts, block_m=block_m)
    want_rows, want_experts = _alignment_by_hand(ids, experts, block_m)
    bound = block_expert.numel()
    assert bound >= len(want_experts) and rows.numel() == bound * block_m
    assert rows.cpu()[: len(want_rows)].tolist() == want_rows
    assert block_expert.cpu().tolist() == want_experts + [-1] * (bound - len(want_experts))


def test_align_pairs_of_no_tokens() -> None:
    rows, block_expert = align_pairs(torch.zeros(0, 2, dtype=torch.int32, device=DEVICE), num_experts=4, block_m=16)
    assert rows.cpu().tolist() == [0] * 16 and block_expert.cpu().tolist() == [-1]


BAD_MOE = {
    "hidden-mismatch": (dict(x=torch.zeros(2, 8)), "do not fit hidden size 8"),
    "dtype-mismatch": (dict(x=torch.zeros(2, 4, dtype=torch.float16)), "share one dtype"),
    "float64": (dict(x=torch.zeros(2, 4, dtype=torch.float64), gate_up=torch.zeros(3, 6, 4, dtype=torch.float64),
                     down=torch.zeros(3, 4, 3, dtype=torch.float64)), "share one dtype"),
    "ids-shape": (dict(ids=torch.zeros(3, 2, dtype=torch.int32)), r"must both be \[T=2, K\]"),
    "activation": (dict(activation="relu"), "activation 'relu'"),
    "one-bias": (dict(gate_up_bias=torch.zeros(3, 6)), "give both expert biases"),
    "bias-shape": (dict(gate_up_bias=torch.zeros(3, 4), down_bias=torch.zeros(3, 4)), "must be \\[3, 6\\] and"),
    "wrong-device": (dict(x=torch.zeros(2, 4, device="meta")), "tensors; got a tensor"),
}


@pytest.mark.parametrize("case", BAD_MOE)
def test_bad_moe_inputs_rejected_before_launch(case: str) -> None:
    given, match = BAD_MOE[case]
    args = dict(x=torch.zeros(2, 4), weights=torch.ones(2, 2), ids=torch.zeros(2, 2, dtype=torch.int32),
                gate_up=torch.zeros(3, 6, 4), down=torch.zeros(3, 4, 3), activation="silu")
    args.update(given)
    tensors = [t if t.device.type == "meta" else t.to(DEVICE)
               for t in (args["x"], args["weights"], args["ids"], args["gate_up"], args["down"])]
    biases = {k: args[k].to(DEVICE) for k in ("gate_up_bias", "down_bias") if k in args}
    with pytest.raises(ValueError, match=match):
        experts_forward(*tensors, args["activation"], **biases)


def _target_with(**caps: object):
    return dataclasses.replace(load_target("reference-triton"), name="broken-triton", known_failures=[], **caps)


BROKEN_KERNELS = {
    "routing/skip_renorm": ("routing-parity", "mixtral",
                            {"routing": RoutingCap(route_with_bug("skip_renorm"), ("softmax_topk",))}),
    "routing/weights_from_biased_score": ("routing-parity", "minimax_m2", {"routing": RoutingCap(
        route_with_bug("weights_from_biased_score"), ("sigmoid_bias",))}),
    "fused_moe/gelu_erf_for_tanh": ("moe-output-parity", "gemma4", {"fused_moe": FusedMoECap(
        experts_forward_with_bug("gelu_erf_for_tanh"), (torch.float32,))}),
    "fused_moe/ignores_routing_weight": ("moe-output-parity", "mixtral", {"fused_moe": FusedMoECap(
        experts_forward_with_bug("ignores_routing_weight"), (torch.float32, torch.float16))}),
    "fused_moe/ignores_down_bias": ("moe-output-parity", "gpt_oss", {"fused_moe": FusedMoECap(
        experts_forward_with_bug("ignores_down_bias"), (torch.float32,), ("swiglu_oai",), ("expert_bias",))}),
}


@pytest.mark.parametrize("name", BROKEN_KERNELS)
def test_checks_catch_a_broken_kernel(name: str) -> None:
    check, family, caps = BROKEN_KERNELS[name]
    # As the target does: the checks' CPU tensors go to the kernels' device and back.
    caps = {k: dataclasses.replace(v, fn=on_device(v.fn, DEVICE)) for k, v in caps.items()}
    verdict = run_case(CHECKS[check], _target_with(**caps), get_family(family), max_examples=10)
    assert verdict.status == Status.FAIL and verdict.kind == ErrorKind.PROPERTY_VIOLATION, f"{name} was not caught: {verdict}"
    assert verdict.counterexample and verdict.tolerance


def test_torch_reference_at_its_dtype_passes_moe_output_parity() -> None:
    """The tolerance is honest: the oracle itself, computing in fp16/fp32, is within it."""
    target = _target_with(fused_moe=FusedMoECap(torch_experts_forward, (torch.float32, torch.float16)))
    for family in ("gemma4", "qwen3_moe"):
        verdict = run_case(CHECKS["moe-output-parity"], target, get_family(family), max_examples=15)
        assert verdict.status == Status.PASS, verdict


def test_kernels_run_interpreted_when_triton_was_imported_first() -> None:
    """Triton imported (by anything) before TRITON_INTERPRET was set must not break the CPU kernels."""
    code = ("import triton, torch\n"
            "from reference.triton.routing import route\n"
            "from reference.triton.fused_moe import experts_forward\n"
            "from reference.config import RoutingKnobs\n"
            "w, ids = route(torch.randn(3, 5), RoutingKnobs('softmax_topk', 2))\n"
            "x = torch.randn(3, 16)\n"
            "out = experts_forward(x, w, ids, torch.randn(5, 32, 16), torch.randn(5, 16, 16), 'silu')\n"
            "assert out.shape == (3, 16) and out.isfinite().all()\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    probe = [sys.executable, "-c", "import reference.triton as rt; print(rt.INTERPRETER_BUG)"]
    bug = subprocess.run(probe, env=env, cwd=root, capture_output=True, text=True, timeout=300).stdout.strip()
    if bug:  # an interpreter that cannot run them says so before launching (seen: Triton 3.6 with numpy 2.5)
        assert done.returncode != 0 and "triton-lang/triton#9171" in done.stderr, done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stderr[-2000:]


def test_target_describes_where_its_kernels_run() -> None:
    target = load_target("reference-triton")
    assert target.capabilities() == ["routing", "fused_moe"]
    assert ("interpreted" in target.description) != ON_CUDA
    assert target.fused_moe is not None and (torch.bfloat16 in target.fused_moe.dtypes) == ON_CUDA


class _RecordedKernel:
    """A kernel that records the compile-time (keyword) arguments of each launch, then launches."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.constexprs: set[tuple] = set()

    def __getitem__(self, grid: Any) -> Any:
        def launch(*args: Any, **kwargs: Any) -> Any:
            self.constexprs.add(tuple(sorted(kwargs.items())))
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_routing_compiles_once_per_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Top-k, token and expert counts are run-time values: a kernel is compiled per K bucket (a power of two) and
    per launch layout only, not per drawn size (issue 16: a compile per drawn example made the GPU runs slow)."""
    recorded = _RecordedKernel(routing_module._route_kernel)
    monkeypatch.setattr(routing_module, "_route_kernel", recorded)
    # One expert bucket (32), three K buckets (4, 8 unrolled; 16 looped): a size passed at compile time would
    # multiply the kernels.
    sizes = [(t, e, k) for t in (1, 7, 100) for e in (20, 24, 30) for k in (3, 4, 5, 8, 12, 16)]
    for tokens, experts, k in sizes:
        route(_logits(tokens, experts, torch.float32), knobs_for("sigmoid_bias+renorm", k, experts))
    buckets = {(max(2, 1 << (k - 1).bit_length()), routing_module.default_launch(e, 4, t, "sigmoid_bias")) for t, e, k in sizes}
    assert len(recorded.constexprs) == len(buckets)


def test_a_variant_that_never_renormalises_compiles_once_for_both_knob_values(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _RecordedKernel(routing_module._route_kernel)
    monkeypatch.setattr(routing_module, "_route_kernel", recorded)
    logits = _logits(5, 24, torch.float32)
    routed = [route(logits, RoutingKnobs("topk_softmax", 4, renormalize=renorm)) for renorm in (False, True)]
    assert len(recorded.constexprs) == 1
    assert all(torch.equal(a, b) for a, b in zip(*routed, strict=True))


def test_routing_run_time_sizes_are_not_specialised() -> None:
    """Triton specialises an integer argument on 1 and on multiples of 16 unless told not to, which multiplied the
    kernels a nightly case compiled (672 for one case's 1000 examples): the run-time sizes are named in
    do_not_specialize, and every name there is an argument of the kernel (a renamed one would be ignored)."""
    kernel = routing_module._route_kernel
    assert set(routing_module.RUN_TIME_SIZES) <= set(inspect.signature(kernel.fn).parameters)
    if not rt.INTERPRETED:  # the interpreter compiles nothing and keeps no specialisation flags
        assert {p.name for p in kernel.params if p.do_not_specialize} == set(routing_module.RUN_TIME_SIZES)


@gpu  # compiled there (the interpreter ignores the cap)
def test_a_capped_routing_launch_routes_like_an_uncapped_one() -> None:
    """The register cap (register_cap: one-warp launches of fp32 logits, grouped excepted) changes where values
    live, never the result; a capped compile that ptxas refused would raise here."""
    assert routing_module.register_cap(4, 1, "gemma4") == routing_module.MAX_REGISTERS
    assert {routing_module.register_cap(2, 1, "gemma4"), routing_module.register_cap(4, 2, "gemma4"),
            routing_module.register_cap(4, 1, "grouped")} == {None}
    logits = _logits(300, 128, torch.float32)
    for variant in ("gemma4", "sigmoid_bias+renorm", "sigmoid_topk_on_logits+renorm"):
        knobs = knobs_for(variant, 8, 128)
        extra = {"per_expert_scale": torch.rand(128, device=DEVICE) + 0.5} if variant == "gemma4" else {}
        capped = launch_route(logits, knobs, launch=RouteLaunch(4, 1, routing_module.MAX_REGISTERS), **extra)
        uncapped = launch_route(logits, knobs, launch=RouteLaunch(4, 1), **extra)
        assert torch.equal(capped[1], uncapped[1]) and torch.equal(capped[0], uncapped[0]), variant


def test_fused_moe_compiles_once_per_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hidden and expert widths are run-time values: other sizes of one dtype, activation and tile configuration
    launch the same compiled kernels."""
    kernels = {name: _RecordedKernel(getattr(fused_moe_module, name)) for name in ("_gate_up_kernel", "_down_kernel")}
    for name, kernel in kernels.items():
        monkeypatch.setattr(fused_moe_module, name, kernel)
    for hidden, width in ((40, 24), (24, 40), (56, 8)):  # none a multiple of any tile depth
        experts_forward(*_moe_inputs(5, 4, 2, hidden, width, torch.float32), "silu")
    assert [len(k.constexprs) for k in kernels.values()] == [1, 1]
