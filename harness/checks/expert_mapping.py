"""expert-mapping: a bijection between checkpoint expert keys and (param, expert, shard) slots."""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.mapping_calls import CKPT_NAMES, MappingExample, mapping_examples
from harness.targets.base import ExpertMappingCap
from harness.verdict import PropertyViolation


def _row(entry: Any) -> tuple[str, str, int, str]:
    if isinstance(entry, tuple):
        return entry  # type: ignore[return-value]
    return (entry.param, entry.ckpt_key, entry.expert_id, entry.shard_id)


def check_mapping(cap: ExpertMappingCap, family: Family, example: MappingExample) -> None:
    rows = [_row(r) for r in call_target(f"new entry point{example.source}", example.call, cap.new)]
    e, r = example.num_experts, example.num_redundant
    if len(rows) != 3 * (e + r):
        raise PropertyViolation(f"mapping has {len(rows)} entries, expected 3·(E+R) = {3 * (e + r)}")
    slots = Counter((param, expert, shard) for param, _, expert, shard in rows)
    dup = [s for s, n in slots.items() if n > 1]
    if dup:
        raise PropertyViolation("a (param, expert_id, shard_id) slot is filled twice", slot=dup[0])
    gate, down, up = CKPT_NAMES[example.names]
    gate_id, up_id, down_id = cap.shard_ids
    proj_of = {gate_id: gate, up_id: up, down_id: down}
    for param, key, expert, shard in rows:
        if shard not in proj_of:
            raise PropertyViolation(f"entry has shard id {shard!r}, not one of the declared shard ids "
                                    f"{cap.shard_ids} (gate, up, down: ExpertMappingCap.shard_ids)",
                                    entry=(param, key, expert, shard))
        logical = expert if expert < e else (expert - e) % e
        want = f"experts.{logical}.{proj_of[shard]}."
        if key != want:
            raise PropertyViolation("entry loads the wrong checkpoint key", entry=(param, key, expert, shard),
                                    expected_key=want)
        want_param = cap.fused_params[1] if shard == down_id else cap.fused_params[0]
        if want_param not in param:
            raise PropertyViolation(f"shard {shard} goes to param {param!r}, expected the {want_param} param "
                                    f"(the fused names ExpertMappingCap.fused_params declares: {cap.fused_params})",
                                    entry=(param, key, expert, shard))
    covered = {(key, expert) for _, key, expert, _ in rows}
    if {expert for _, expert in covered} != set(range(e + r)):
        raise PropertyViolation("not every physical expert slot is filled")
    if cap.old is not None:
        old = [_row(x) for x in call_target(f"old entry point{example.source}", example.call, cap.old)]
        if old != rows:
            raise PropertyViolation("old and new entry points disagree", old_first=old[:2], new_first=rows[:2])


EXPERT_MAPPING: Check[ExpertMappingCap] = Check(
    name="expert-mapping",
    capability="expert_mapping",
    summary="3·(E+R) rows, one per slot; w1=gate, w3=up, w2=down (or the declared ids and fused params); "
            "redundant p loads (p−E) mod E; old == new",
    draws=lambda cap, family: mapping_examples(with_redundant=cap.redundant),
    holds=check_mapping,
    describe=lambda example: {"call": example.source, "num_experts": example.num_experts,
                              "num_redundant_experts": example.num_redundant, "call_form": example.call_form},
    families=("any",),  # the mapping takes no config: one family stands for all
    needs_spec=False,
)
