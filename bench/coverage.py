"""Coverage benchmark (a script, not a test): what one dev-sized run of routing-parity draws, over many seeds,
and how often it finds bugs that show only at a boundary or a released model's size.

    .venv/bin/python -m bench.coverage [--seeds 40]

Per Hypothesis seed, one case of 25 examples (the dev profile), generation only: the share of runs that
draw top-2 (Mixtral's K), K = E, a single token, and an expert count of a released model; then, per toy
router below, the share of runs that find its bug within those 25 examples.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import hypothesis
import torch
from hypothesis import Phase, given, settings

from bench.detection import first_failure
from harness.engine import quiet_libraries
from harness.strategies.routing_inputs import RoutingExample, routing_examples
from harness.strategies.sizes import REAL_EXPERT_COUNTS
from harness.targets.base import RoutingCap, Target
from reference.config import RoutingKnobs
from reference.routing import route

DEV_EXAMPLES = 25
Router = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _correct(logits: torch.Tensor, knobs: RoutingKnobs, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    return route(logits.float(), knobs, **kw)  # type: ignore[arg-type]


def _k2_fast_path_skips_renormalise(logits: torch.Tensor, knobs: RoutingKnobs, **kw: object):
    """A special-cased top-2 kernel (engines have them) that forgets the renormalisation."""
    if knobs.top_k == 2 and knobs.renormalize:
        knobs = dataclasses.replace(knobs, renormalize=False)
    return _correct(logits, knobs, **kw)


def _decode_path_skips_renormalise(logits: torch.Tensor, knobs: RoutingKnobs, **kw: object):
    """A one-token (decode) path that forgets the renormalisation."""
    if logits.shape[0] == 1 and knobs.renormalize:
        knobs = dataclasses.replace(knobs, renormalize=False)
    return _correct(logits, knobs, **kw)


def _all_experts_path_misorders(logits: torch.Tensor, knobs: RoutingKnobs, **kw: object):
    """K = E selects every expert, so a shortcut returns ids in expert order beside weights in score order."""
    weights, ids = _correct(logits, knobs, **kw)
    if knobs.top_k == logits.shape[1] > 1:
        ids = torch.arange(logits.shape[1], dtype=torch.int32).expand_as(ids).contiguous()
    return weights, ids


TOYS: dict[str, Router] = {
    "top-2 fast path skips renormalise": _k2_fast_path_skips_renormalise,
    "decode path skips renormalise": _decode_path_skips_renormalise,
    "K = E shortcut misorders ids": _all_experts_path_misorders,
}


def _drawn(seed: int) -> list[RoutingExample]:
    seen: list[RoutingExample] = []

    @hypothesis.seed(seed)
    @settings(max_examples=DEV_EXAMPLES, phases=[Phase.generate], database=None, deadline=None)
    @given(routing_examples(("softmax_topk",)))
    def run(ex: RoutingExample) -> None:
        seen.append(ex)

    run()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=40)
    args = parser.parse_args()
    quiet_libraries()
    runs = [_drawn(seed) for seed in range(args.seeds)]
    share = {
        "top-2 drawn": lambda ex: ex.knobs.top_k == 2,
        "K = E drawn (E > 1)": lambda ex: ex.knobs.top_k == ex.logits.shape[1] > 1,
        "one token drawn": lambda ex: ex.logits.shape[0] == 1,
        "a released model's E drawn": lambda ex: ex.logits.shape[1] in REAL_EXPERT_COUNTS,
    }
    print(f"| what (routing-parity, softmax_topk, {DEV_EXAMPLES} examples per run) | runs |")
    print("|---|---|")
    for what, hit in share.items():
        print(f"| {what} | {sum(any(map(hit, run)) for run in runs)}/{len(runs)} |", flush=True)
    for what, fn in TOYS.items():
        toy = Target(name="toy", version="0", description=what, routing=RoutingCap(fn, variants=("softmax_topk",)))
        found = sum(first_failure("routing-parity", toy, "mixtral", seed, DEV_EXAMPLES)[0] is not None
                    for seed in range(args.seeds))
        print(f"| bug found: {what} | {found}/{args.seeds} |", flush=True)


if __name__ == "__main__":
    main()
