"""differential: one checkpoint, loaded by the engine's own loader and by transformers', gives the same MoE block
output, the reference's.

The checkpoint is the one transformers writes for the family (from the example's seed); what it means is the block of
the model it was written from, exported under the reference's names, which loads the reference block. Both loaded
blocks run on the same input; each is held to the reference computing on its own router logits (float32 both
sides). A disagreement is reported against whichever side differs from the reference (both, when both do); a
transformers that raises on its own checkpoint is reported as its side's failure, with the engine's side judged
all the same.
"""

from __future__ import annotations

import torch

from harness.assertions import assert_close
from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.block_inputs import BlockInput, block_inputs
from harness.targets.base import DifferentialCap, DifferentialRun
from harness.tolerances import tolerance_for
from harness.verdict import PropertyViolation
from reference.moe import MoEBlock


def check_differential(cap: DifferentialCap, family: Family, example: BlockInput) -> None:
    spec = family.spec
    x = example.hidden_states(spec.hidden_size)
    run = call_target("the checkpoint loaded by the engine and by transformers, each block run on x", cap.run,
                      family.name, example.seed, x, returns=DifferentialRun)
    ref = MoEBlock(spec)
    ref.load_state_dict(run.written)  # our export of transformers' written model: a mismatch is the harness's bug
    with torch.no_grad():
        want = ref(x)
    tol = tolerance_for(torch.float32, family.tolerances)
    failures: list[PropertyViolation] = []
    for side, got in (("the engine's", run.engine), ("transformers'", run.transformers)):
        if got is None:
            failures.append(PropertyViolation(f"transformers' own loading or block raised on the checkpoint it wrote: "
                                              f"{run.transformers_error}", side="transformers",
                                              error=run.transformers_error))
            continue
        try:
            assert_close(got, want, tol, f"{family.name}: {side} block loaded from the checkpoint vs the reference")
        except PropertyViolation as failure:
            failure.details["side"] = "engine" if side == "the engine's" else "transformers"
            failures.append(failure)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        first = failures[0]
        raise PropertyViolation(f"both sides differ from the reference; {first.message}", first.tolerance,
                                **{**first.details, "side": "both", "transformers": failures[1].message})


DIFFERENTIAL: Check[DifferentialCap] = Check(
    name="differential",
    capability="differential",
    summary="one checkpoint loaded by the engine and by transformers: both MoE blocks == the reference block it means",
    draws=lambda cap, family: block_inputs(),
    holds=check_differential,
    describe=BlockInput.describe,
)
