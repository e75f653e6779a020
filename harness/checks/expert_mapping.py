"""expert-mapping: a bijection between checkpoint expert keys and (param, expert, shard) slots."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.targets.base import Target
from harness.verdict import PropertyViolation

CKPT_NAMES = {"proj": ("gate_proj", "down_proj", "up_proj"), "w": ("w1", "w2", "w3")}
CALL_FORMS = ("positional", "keyword", "positional-no-redundant", "keyword-no-redundant")


@dataclass(frozen=True)
class MappingCase:
    num_experts: int
    num_redundant: int
    names: str
    call_form: str

    def call(self, fn: Any) -> list[Any]:
        gate, down, up = CKPT_NAMES[self.names]
        args: list[Any] = [gate, down, up, self.num_experts]
        kwargs = dict(zip(("ckpt_gate_proj_name", "ckpt_down_proj_name", "ckpt_up_proj_name", "num_experts"),
                          args, strict=True))
        with_r = not self.call_form.endswith("no-redundant")
        if self.call_form.startswith("positional"):
            return fn(*args, *([self.num_redundant] if with_r else []))
        return fn(**kwargs, **({"num_redundant_experts": self.num_redundant} if with_r else {}))

    @property
    def source(self) -> str:
        gate, down, up = CKPT_NAMES[self.names]
        r = "" if self.call_form.endswith("no-redundant") else (
            f", {self.num_redundant}" if self.call_form.startswith("positional") else
            f", num_redundant_experts={self.num_redundant}")
        if self.call_form.startswith("positional"):
            return f"({gate!r}, {down!r}, {up!r}, {self.num_experts}{r})"
        return (f"(ckpt_gate_proj_name={gate!r}, ckpt_down_proj_name={down!r}, ckpt_up_proj_name={up!r}, "
                f"num_experts={self.num_experts}{r})")


@st.composite
def mapping_cases(draw: st.DrawFn) -> MappingCase:
    """E in 1..64, R in 0..E, both checkpoint name styles, and every call form an old caller may use
    (omitting num_redundant_experts only when it is 0). Shrinks toward E=1, R=0, positional."""
    form = draw(st.sampled_from(CALL_FORMS))
    num_experts = draw(st.integers(1, 64))
    redundant = 0 if form.endswith("no-redundant") else draw(st.integers(0, num_experts))
    return MappingCase(num_experts, redundant, draw(st.sampled_from(tuple(CKPT_NAMES))), form)


def _row(entry: Any) -> tuple[str, str, int, str]:
    if isinstance(entry, tuple):
        return entry  # type: ignore[return-value]
    return (entry.param, entry.ckpt_key, entry.expert_id, entry.shard_id)


def check_mapping(target: Target, family: Family, case: MappingCase) -> None:
    cap = target.expert_mapping
    assert cap is not None
    rows = [_row(r) for r in call_target(f"new entry point{case.source}", case.call, cap.new)]
    e, r = case.num_experts, case.num_redundant
    if len(rows) != 3 * (e + r):
        raise PropertyViolation(f"mapping has {len(rows)} entries, expected 3·(E+R) = {3 * (e + r)}")
    slots = Counter((param, expert, shard) for param, _, expert, shard in rows)
    dup = [s for s, n in slots.items() if n > 1]
    if dup:
        raise PropertyViolation("a (param, expert_id, shard_id) slot is filled twice", slot=dup[0])
    gate, down, up = CKPT_NAMES[case.names]
    proj_of = {"w1": gate, "w3": up, "w2": down}
    for param, key, expert, shard in rows:
        logical = expert if expert < e else (expert - e) % e
        want = f"experts.{logical}.{proj_of.get(shard, '?')}."
        if shard not in proj_of or key != want:
            raise PropertyViolation("entry loads the wrong checkpoint key", entry=(param, key, expert, shard),
                                    expected_key=want)
        want_param = "w2" if shard == "w2" else "w13"
        if want_param not in param:
            raise PropertyViolation(f"shard {shard} goes to param {param!r}, expected the {want_param} param",
                                    entry=(param, key, expert, shard))
    covered = {(key, expert) for _, key, expert, _ in rows}
    if {expert for _, expert in covered} != set(range(e + r)):
        raise PropertyViolation("not every physical expert slot is filled")
    if cap.old is not None:
        old = [_row(x) for x in call_target(f"old entry point{case.source}", case.call, cap.old)]
        if old != rows:
            raise PropertyViolation("old and new entry points disagree", old_first=old[:2], new_first=rows[:2])


EXPERT_MAPPING = Check(
    name="expert-mapping",
    capability="expert_mapping",
    summary="3·(E+R) rows, one per slot; w1=gate, w3=up, w2=down; redundant p loads (p−E) mod E; old == new",
    strategy=lambda target, family: mapping_cases(),
    prop=check_mapping,
    describe=lambda case: {"call": case.source, "num_experts": case.num_experts,
                           "num_redundant_experts": case.num_redundant, "call_form": case.call_form},
    families=("any",),  # the mapping takes no config: one family stands for all
)
