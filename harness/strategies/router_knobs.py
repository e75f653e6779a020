"""A routing knob a family's config declares, flipped to another valid value, and the router's input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.targets.base import Knob
from reference.config import MoESpec

SCALING_FACTORS = (0.5, 2.0, 3.25)
INPUT_SCALES = (1.0, 4.0)


@dataclass(frozen=True)
class KnobExample:
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
    """The values other than the default that keep the config valid (n_group divides E, K fits the kept groups,
    K at most the experts the kept groups hold)."""
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
    if knob.kind == "top_k":
        n_group = current.get("n_group") or 1
        reachable = (current.get("topk_group") or n_group) * (e // n_group)
        return [t for t in range(1, min(e, reachable) + 1) if t != knob.default]
    return []


def knob_examples(declared: tuple[Knob, ...], spec: MoESpec) -> st.SearchStrategy[KnobExample]:
    """A knob of `declared` with a value of its `flip_values` for `spec`, 8..32 tokens, a seed in 0..2**16
    and an input scale of INPUT_SCALES. Shrinks toward the first knob and its first value, 8 tokens, seed 0,
    scale 1."""
    choices = [(kn, v) for kn in declared for v in flip_values(kn, spec, declared)]
    return st.builds(lambda kv, tokens, seed, scale: KnobExample(kv[0], kv[1], tokens, seed, scale),
                     st.sampled_from(choices), st.integers(8, 32), st.integers(0, 2**16),
                     st.sampled_from(INPUT_SCALES))
