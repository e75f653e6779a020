"""Pinned counterexamples (Hypothesis `@example`), built from the `[failure.pin]` data of the findings files.

Every run of a check × target × family tries its pins before it generates anything (the `repro` profile
too), so a finding stays in the suite without the example database, and a known failure that stops failing
shows up as stale at once. A pin is built when its case runs (some write a checkpoint directory), never at
import. Each builder imports its example types (from harness.strategies) when it runs; nothing the targets
import depends on this module, so those imports make no cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.findings import Finding, all_findings

Builder = Callable[..., Any]


def _conversion(family: str, source: str, key: str) -> Any:
    """One checkpoint of `source` holding the single key `key`."""
    from harness.strategies.conversion_keys import ConversionExample, ConversionKeys

    return ConversionExample((ConversionKeys(source, (key,)),))


def _two_layout_checkpoint(family: str, names: str) -> Any:
    """A one-layer, one-expert checkpoint of `family` holding layer 0's experts both per expert (`names`:
    proj or w) and fused."""
    from harness.strategies.checkpoint_files import CheckpointPlan, write_checkpoint
    from reference.checkpoint import KeySchema

    per_expert, fused = (KeySchema(prefix="model.", block="mlp", layout=layout, names=names)
                         for layout in ("per_expert", "fused"))
    return write_checkpoint(CheckpointPlan(family=family, schema=per_expert, num_layers=1, num_experts=1,
                                           hidden=2, intermediate=2, duplicate=fused, duplicate_layers=(0,)))


def _fused_checkpoint(family: str, prefix: str, block: str = "mlp", layers: int = 2, experts: int = 2) -> Any:
    """A checkpoint of `family` in the fused layout (gate_up_proj / down_proj) under `prefix`, tiny sizes."""
    from harness.strategies.checkpoint_files import CheckpointPlan, write_checkpoint
    from reference.checkpoint import KeySchema

    return write_checkpoint(CheckpointPlan(family=family, schema=KeySchema(prefix=prefix, block=block, layout="fused"),
                                           num_layers=layers, num_experts=experts, hidden=8, intermediate=2))


def _spelling(family: str, experts_name: str, experts: int, top_k_name: str, top_k: int, path: str = "",
              experts_alias: bool = False) -> Any:
    """Both names in the family's config at `path` ("": top level); `experts_alias`: the experts name is an
    `attribute_map` alias."""
    from harness.strategies.spellings import SpellingExample
    from harness.targets.base import Spelling

    return SpellingExample((Spelling("num_experts", experts_name, path, experts_alias), experts),
                           (Spelling("top_k", top_k_name, path), top_k))


def _synthetic_capture(family: str, top_k_name: str, path: str = "") -> Any:
    """A three-layer synthetic config spelling experts-per-token `top_k_name` (under `path`), and 8 tokens."""
    from harness.strategies.configs import synthetic_config

    return synthetic_config(top_k_name, "num_local_experts", path, top_k=2, experts=4, layers=3), 8


def _family_capture(family: str, top_k: int, layers: int = 1, max_tokens: int = 1) -> Any:
    """The family's own tiny config with `top_k` and `layers` (as capturer-shape draws it), and `max_tokens`."""
    from harness.strategies.configs import family_config

    return family_config(family, top_k, layers), max_tokens


def _knob(family: str, name: str, knob: str, default: Any, value: Any) -> Any:
    """The config field `name` (reference knob `knob`) flipped from `default` to `value`."""
    from harness.strategies.router_knobs import KnobExample
    from harness.targets.base import Knob

    return KnobExample(Knob(knob, name, default), value, tokens=8, seed=0, scale=1.0)


def _config_variant(family: str, field: str, value: Any = None) -> Any:
    """The family's tiny config with one declared field (`path.name` as the example names it) set to `value`
    (left out: None, which TOML cannot write)."""
    from harness.strategies.config_variants import VariantExample
    from harness.targets.transformers.config_variants import fields

    declared = next(f for f in fields(family) if str(f) == field)
    return VariantExample(((declared, value),))


def _routing(family: str, variant: str, top_k: int, renormalize: bool, logits: list[list[float]],
             bias: list[float] | None = None, scaling_factor: float = 1.0) -> Any:
    """Fixed fp32 `logits` routed by `variant`, with the selection `bias` and routed `scaling_factor` given (no
    per-expert scale)."""
    import torch

    from harness.strategies.routing_inputs import RoutingExample
    from reference.config import RoutingKnobs

    knobs = RoutingKnobs(variant, top_k=top_k, renormalize=renormalize, scaling_factor=scaling_factor)
    return RoutingExample(torch.tensor(logits), knobs, None if bias is None else torch.tensor(bias), None, "normal", 0)


def _model_input(family: str, tokens: int, seed: int, form: str) -> Any:
    from harness.strategies.model_checkpoints import ModelInput

    return ModelInput(tokens, seed, form)


def _load_input(family: str, seed: int) -> Any:
    from harness.strategies.fingerprints import LoadInput

    return LoadInput(seed)


def _block_input(family: str, tokens: int, seed: int, scale: float = 1.0) -> Any:
    """`tokens` hidden states from `seed` (which also seeds the block's weights), times `scale` (block-parity)."""
    from harness.strategies.block_inputs import BlockInput

    return BlockInput(tokens, seed, scale)


def _substitution(family: str, tokens: int, seed: int) -> Any:
    """A block and its `tokens`-token input built from `seed` (functional-call)."""
    from harness.strategies.block_inputs import SubstitutionExample

    return SubstitutionExample(tokens, seed)


# The builders by the `kind` a [failure.pin] names; each takes the finding's family and the pin's other fields.
BUILDERS: dict[str, Builder] = {
    "conversion": _conversion,
    "two-layout-checkpoint": _two_layout_checkpoint,
    "fused-checkpoint": _fused_checkpoint,
    "spelling": _spelling,
    "synthetic-capture": _synthetic_capture,
    "family-capture": _family_capture,
    "knob": _knob,
    "routing": _routing,
    "config-variant": _config_variant,
    "model-input": _model_input,
    "load-input": _load_input,
    "block-input": _block_input,
    "substitution": _substitution,
}


@dataclass(frozen=True)
class Pin:
    """One pinned counterexample: the finding it belongs to, and how to build it."""

    finding: Finding

    @property
    def kind(self) -> str:
        assert self.finding.pin is not None
        return str(self.finding.pin["kind"])

    def build(self) -> Any:
        assert self.finding.pin is not None
        fields = {k: v for k, v in self.finding.pin.items() if k != "kind"}
        return BUILDERS[self.kind](self.finding.family, **fields)


def all_pins() -> tuple[Pin, ...]:
    """Every pin of every built-in target's findings, in file order."""
    return tuple(Pin(f) for f in all_findings() if f.pin is not None)


def pins_for(check: str, target: str, family: str) -> list[Pin]:
    """The pins of check × target × family, in the order they were found."""
    return [p for p in all_pins() if (p.finding.check, p.finding.target, p.finding.family) == (check, target, family)]
