"""Calls of an expert-params mapping (`make_expert_params_mapping`): expert counts, checkpoint names, call forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.strategies.sizes import REAL_EXPERT_COUNTS, sizes

# The checkpoint's (gate, down, up) projection names, per naming style.
CKPT_NAMES = {"proj": ("gate_proj", "down_proj", "up_proj"), "w": ("w1", "w2", "w3")}
CALL_FORMS = ("positional", "keyword", "positional-no-redundant", "keyword-no-redundant")


@dataclass(frozen=True)
class MappingExample:
    """One call of the mapping: E experts, R redundant ones, a name style, and how the call spells them."""

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
def mapping_examples(draw: st.DrawFn, with_redundant: bool = True) -> MappingExample:
    """E in 1..64, R in 0..E (each weighted toward its bounds, E toward released models' counts), both checkpoint name styles, and every call form an old caller may use
    (omitting num_redundant_experts only when it is 0; always, for an engine without redundant experts). Shrinks toward E=1, R=0, `proj` names and the
    positional form; a form that omits R is one draw shorter, so it is what an example not needing R shrinks to."""
    forms = CALL_FORMS if with_redundant else tuple(f for f in CALL_FORMS if f.endswith("no-redundant"))
    form = draw(st.sampled_from(forms))
    num_experts = draw(sizes(1, 64, REAL_EXPERT_COUNTS))
    redundant = 0 if form.endswith("no-redundant") else draw(sizes(0, num_experts, (1,)))
    return MappingExample(num_experts, redundant, draw(st.sampled_from(tuple(CKPT_NAMES))), form)
