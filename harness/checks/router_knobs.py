"""router-knobs: each routing knob a family's config declares, flipped, changes its real router as the
reference says, and the router built with it routes as the reference does.

A knob (renormalize, scaling factor, n_group, topk_group, experts per token) is drawn with a valid value other than the
tiny config's; the target builds the family's real router with and without it. On the same logits, where
the reference's routing for the two resolved specs differs, the real routings must differ too (else the
knob has no effect); and each real routing must be a valid top-K of the reference's selection score with
the reference's weights for its picks.
"""

from __future__ import annotations

import torch

from harness.assertions import assert_close, assert_valid_routing, located
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.router_knobs import KnobExample, flip_values, knob_examples
from harness.targets.base import Knob, RouterKnobsCap, RouterRun
from harness.tolerances import WEIGHT_TOLERANCE
from harness.verdict import PropertyViolation, TargetError, not_applicable
from reference.config import MoESpec, resolve_moe_spec
from reference.routing import route, weights_for

# The reference's routing must move by more than this for the knob to be required to act; the real
# router's by more than WEIGHT_TOLERANCE's atol for it to count as acting.
REFERENCE_CHANGE = 1e-3


def _dense(weights: torch.Tensor, ids: torch.Tensor, experts: int) -> torch.Tensor:
    """Routing as a [T, E] matrix (weight per expert, 0 where not picked): comparable whatever the pick order."""
    w = weights.detach().double().cpu().reshape(ids.shape)
    return torch.zeros(ids.shape[0], experts, dtype=torch.float64).scatter_add_(1, ids.long().cpu(), w)


def _observe(run: RouterRun, x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's router logits [T,E] (float64) and its routing (weights, ids) for x."""
    logits = call_target(f"{what}: router logits", run.logits, x, returns=torch.Tensor).double()
    weights, ids = call_target(f"{what}: routing", run.route, x, returns=(torch.Tensor, torch.Tensor))
    return logits, weights, ids


def _assert_parity(run: RouterRun, spec: MoESpec, observed: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   what: str) -> None:
    """The run's picks are a valid top-K of the reference's selection score, with the reference's weights."""
    logits, weights, ids = observed
    bias = run.bias.double() if run.bias is not None else torch.zeros(spec.num_experts, dtype=torch.float64)
    if ids.shape[-1] != spec.top_k:
        raise PropertyViolation(f"{what}: the router picks {ids.shape[-1]} experts per token; the config says "
                                f"top_k={spec.top_k}")
    with located(what):
        assert_valid_routing(logits, spec.routing, bias, ids, spec.top_k)
        scale = run.per_expert_scale.double() if run.per_expert_scale is not None else None
        want = weights_for(logits, ids, spec.routing, scale)
        assert_close(weights.double().reshape(want.shape), want, WEIGHT_TOLERANCE,
                     f"routing weights vs the reference {spec.routing.variant} ({spec.routing})")


def check_router_knobs(cap: RouterKnobsCap, family: Family, example: KnobExample) -> None:
    name = example.knob.name
    default = call_target(f"building {family.name}'s router", cap.build, family.name, (), 0)
    flipped = call_target(f"building {family.name}'s router with {name}={example.value!r}", cap.build,
                          family.name, ((name, example.value),), 0)
    spec_d, spec_f = resolve_moe_spec(default.config), resolve_moe_spec(flipped.config)
    gen = torch.Generator().manual_seed(example.seed)
    x = torch.randn(example.tokens, default.hidden_size, generator=gen) * example.scale
    label_d = f"{family.name} with {name}={example.knob.default!r} (default)"
    label_f = f"{family.name} with {name}={example.value!r}"
    seen_d, seen_f = _observe(default, x, label_d), _observe(flipped, x, label_f)
    if not torch.equal(seen_d[0], seen_f[0]):
        # No knob of Knob.kind changes the router's own tensors: built with the same seed, the adapter must
        # give the same router weights, or "no effect" could not be judged.
        raise TargetError(f"build({family.name!r}, overrides, seed=0) gave different router logits with "
                          f"{name}={example.value!r} than without: the same seed must build the same router "
                          f"weights", RuntimeError(name))
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
            f"knob with no effect: {name} flipped {example.knob.default!r} -> {example.value!r} changes nothing "
            f"in {family.name}'s real router (max routing change {real_change:.3g}), while the reference "
            f"({spec_d.routing} -> {spec_f.routing}) moves the routing by {ref_change:.3g}",
            tolerance=str(WEIGHT_TOLERANCE), knob=name, reference_change=ref_change, real_change=real_change)
    _assert_parity(default, spec_d, seen_d, label_d)
    _assert_parity(flipped, spec_f, seen_f, label_f)


def _knobs(cap: RouterKnobsCap, family: Family) -> tuple[Knob, ...]:
    return call_target(f"knobs({family.name!r})", cap.knobs, family.name, returns=tuple)  # type: ignore[no-any-return]


def _excludes(cap: RouterKnobsCap, family: Family, target_name: str) -> str | None:
    declared = _knobs(cap, family)
    if not any(flip_values(kn, family.spec, declared) for kn in declared):
        return not_applicable("no declared knob has a valid value other than its default")
    return None


ROUTER_KNOBS: Check[RouterKnobsCap] = Check(
    name="router-knobs",
    capability="router_knobs",
    summary="each declared routing knob, flipped, moves the real router as the reference does (never a no-op)",
    draws=lambda cap, family: knob_examples(_knobs(cap, family), family.spec),
    holds=check_router_knobs,
    describe=lambda example: example.describe(),
    excludes=_excludes,
    example_caps=(("dev", 5), ("ci", 5)),
)
