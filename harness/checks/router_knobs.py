"""router-knobs: each routing knob a family's config declares, flipped, changes its real router as the
reference says, and the router built with it routes as the reference does.

A knob (renormalize, scaling factor, n_group, topk_group) is drawn with a valid value other than the
tiny config's; the target builds the family's real router with and without it. On the same logits, where
the reference's routing for the two resolved specs differs, the real routings must differ too (else the
knob has no effect); and each real routing must be a valid top-K of the reference's selection score with
the reference's weights for its picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.checks.routing_parity import WEIGHT_TOLERANCE, assert_valid_selection
from harness.families import Family
from harness.targets.base import Knob, RouterRun, Target
from harness.tolerances import assert_close
from harness.verdict import PropertyViolation
from reference.config import MoESpec, resolve_moe_spec
from reference.routing import route, selection_scores, weights_for

SCALING_FACTORS = (0.5, 2.0, 3.25)
# The reference's routing must move by more than this for the knob to be required to act; the real
# router's by more than WEIGHT_TOLERANCE's atol for it to count as acting.
REFERENCE_CHANGE = 1e-3


@dataclass(frozen=True)
class KnobCase:
    """A knob flipped to `value`, and the input: `tokens` hidden states from `seed`, times `scale`."""

    knob: Knob
    value: Any
    tokens: int
    seed: int
    scale: float

    def describe(self) -> dict[str, Any]:
        return {"knob": self.knob.name, "kind": self.knob.kind, "default": self.knob.default, "value": self.value,
                "tokens": self.tokens, "seed": self.seed, "input_scale": self.scale}


def flip_values(knob: Knob, spec: MoESpec, knobs: tuple[Knob, ...]) -> list[Any]:
    """The values other than the default that keep the config valid (n_group divides E, K fits the kept groups)."""
    e, k = spec.num_experts, spec.top_k
    current = {kn.kind: kn.default for kn in knobs}
    if knob.kind == "renormalize":
        return [not bool(knob.default)]
    if knob.kind == "scaling_factor":
        return [v for v in SCALING_FACTORS if v != knob.default]
    if knob.kind == "n_group":
        groups = current.get("topk_group") or 1
        return [g for g in range(1, e + 1) if e % g == 0 and g != knob.default and groups <= g
                and k <= groups * (e // g)]
    if knob.kind == "topk_group":
        n_group = current.get("n_group") or 1
        return [t for t in range(1, n_group + 1) if t != knob.default and k <= t * (e // n_group)]
    return []


def knob_cases(target: Target, family: Family) -> st.SearchStrategy[KnobCase]:
    """A declared knob with a valid flipped value, and 8..32 tokens; shrinks toward the first knob and value."""
    assert target.router_knobs is not None
    declared = target.router_knobs.knobs(family.name)
    choices = [(kn, v) for kn in declared for v in flip_values(kn, family.spec, declared)]
    return st.builds(lambda kv, tokens, seed, scale: KnobCase(kv[0], kv[1], tokens, seed, scale),
                     st.sampled_from(choices), st.integers(8, 32), st.integers(0, 2**16), st.sampled_from([1.0, 4.0]))


def _dense(weights: torch.Tensor, ids: torch.Tensor, experts: int) -> torch.Tensor:
    """Routing as a [T, E] matrix (weight per expert, 0 where not picked): comparable whatever the pick order."""
    w = weights.detach().double().cpu().reshape(ids.shape)
    return torch.zeros(ids.shape[0], experts, dtype=torch.float64).scatter_add_(1, ids.long().cpu(), w)


def _observe(run: RouterRun, x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's router logits [T,E] (float64) and its routing (weights, ids) for x."""
    logits = call_target(f"{what}: router logits", run.logits, x).double()
    weights, ids = call_target(f"{what}: routing", run.route, x)
    return logits, weights, ids


def _assert_parity(run: RouterRun, spec: MoESpec, observed: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   what: str) -> None:
    """The run's picks are a valid top-K of the reference's selection score, with the reference's weights."""
    logits, weights, ids = observed
    bias = run.bias.double() if run.bias is not None else torch.zeros(spec.num_experts, dtype=torch.float64)
    if ids.shape[-1] != spec.top_k:
        raise PropertyViolation(f"{what}: the router picks {ids.shape[-1]} experts per token; the config says "
                                f"top_k={spec.top_k}")
    try:
        assert_valid_selection(selection_scores(logits, spec.routing, bias), ids, spec.top_k)
        scale = run.per_expert_scale.double() if run.per_expert_scale is not None else None
        want = weights_for(logits, ids, spec.routing, scale)
        assert_close(weights.double().reshape(want.shape), want, WEIGHT_TOLERANCE,
                     f"routing weights vs the reference {spec.routing.variant} ({spec.routing})")
    except PropertyViolation as v:
        raise PropertyViolation(f"{what}: {v.message}", tolerance=v.tolerance, **v.details) from None


def check_router_knobs(target: Target, family: Family, case: KnobCase) -> None:
    assert target.router_knobs is not None
    cap, name = target.router_knobs, case.knob.name
    default = call_target(f"building {family.name}'s router", cap.build, family.name, (), 0)
    flipped = call_target(f"building {family.name}'s router with {name}={case.value!r}", cap.build,
                          family.name, ((name, case.value),), 0)
    spec_d, spec_f = resolve_moe_spec(default.config), resolve_moe_spec(flipped.config)
    x = torch.randn(case.tokens, default.hidden_size, generator=torch.Generator().manual_seed(case.seed)) * case.scale
    label_d = f"{family.name} with {name}={case.knob.default!r} (default)"
    label_f = f"{family.name} with {name}={case.value!r}"
    seen_d, seen_f = _observe(default, x, label_d), _observe(flipped, x, label_f)
    if not torch.equal(seen_d[0], seen_f[0]):
        # No knob of Knob.kind changes the router's own tensors; if one did, "no effect" could not be judged.
        raise RuntimeError(f"flipping {name} changed {family.name}'s router logits, not only its routing")
    extra: dict[str, torch.Tensor] = {}
    if default.per_expert_scale is not None:
        extra["per_expert_scale"] = default.per_expert_scale
    ref = [_dense(*route(seen_d[0], s.routing, bias=default.bias, oracle=True, **extra), spec_d.num_experts)
           for s in (spec_d, spec_f)]
    ref_change = float((ref[0] - ref[1]).abs().max())
    real_change = float((_dense(*seen_d[1:], spec_d.num_experts) - _dense(*seen_f[1:], spec_d.num_experts))
                        .abs().max())
    if ref_change > REFERENCE_CHANGE and real_change <= WEIGHT_TOLERANCE.atol:
        raise PropertyViolation(
            f"knob with no effect: {name} flipped {case.knob.default!r} -> {case.value!r} changes nothing in "
            f"{family.name}'s real router (max routing change {real_change:.3g}), while the reference "
            f"({spec_d.routing} -> {spec_f.routing}) moves the routing by {ref_change:.3g}",
            tolerance=str(WEIGHT_TOLERANCE), knob=name, reference_change=ref_change, real_change=real_change)
    _assert_parity(default, spec_d, seen_d, label_d)
    _assert_parity(flipped, spec_f, seen_f, label_f)


def _applies(target: Target, family: Family) -> str | None:
    assert target.router_knobs is not None
    declared = target.router_knobs.knobs(family.name)
    if not any(flip_values(kn, family.spec, declared) for kn in declared):
        return "no declared knob has a valid value other than its default"
    return None


ROUTER_KNOBS = Check(
    name="router-knobs",
    capability="router_knobs",
    summary="each declared routing knob, flipped, moves the real router as the reference does (never a no-op)",
    strategy=knob_cases,
    prop=check_router_knobs,
    describe=lambda case: case.describe(),
    applies=_applies,
    example_caps=(("dev", 5), ("ci", 5)),
)
