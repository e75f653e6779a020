"""Counterexamples real targets have failed on, pinned as explicit examples (Hypothesis `@example`).

Every run of the named check × target × family tries its pins before it generates anything (the
`repro` profile too), so a finding stays in the suite without the example database, and a known
failure that stops failing shows up as stale at once. A pin's example is built when its case runs
(some write a checkpoint directory), never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Pin:
    """One pinned counterexample: where it failed, what it showed, and how to build it."""

    check: str
    target: str
    family: str
    finding: str
    build: Callable[[], Any]


def pins_for(check: str, target: str, family: str) -> list[Pin]:
    """The pins of check × target × family, in the order they were found."""
    return [p for p in PINS if (p.check, p.target, p.family) == (check, target, family)]


def _conversion(source: str, key: str) -> Callable[[], Any]:
    def build() -> Any:
        from harness.checks.conversion_remap import ConversionExample, ConversionKeys

        return ConversionExample((ConversionKeys(source, (key,)),))

    return build


def _two_layout_checkpoint(family: str, names: str) -> Callable[[], Any]:
    def build() -> Any:
        from harness.strategies.checkpoint_files import CheckpointPlan, write_checkpoint
        from reference.checkpoint import KeySchema

        per_expert, fused = (KeySchema(prefix="model.", block="mlp", layout=layout, names=names)
                             for layout in ("per_expert", "fused"))
        return write_checkpoint(CheckpointPlan(family=family, schema=per_expert, num_layers=1, num_experts=1,
                                               hidden=2, intermediate=2, duplicate=fused, duplicate_layers=(0,)))

    return build


def _spelling(experts_name: str, experts: int, top_k_name: str, top_k: int) -> Callable[[], Any]:
    """Both names as top-level fields of the family's config."""
    def build() -> Any:
        from harness.checks.config_spelling import SpellingCase
        from harness.targets.base import Spelling

        return SpellingCase((Spelling("num_experts", experts_name), experts), (Spelling("top_k", top_k_name), top_k))

    return build


def _synthetic_capture(top_k_name: str, path: str = "") -> Callable[[], Any]:
    def build() -> Any:
        from harness.strategies.configs import synthetic_config

        return synthetic_config(top_k_name, "num_local_experts", path, top_k=2, experts=4, layers=3), 8

    return build


def _knob(name: str, kind: str, default: Any, value: Any) -> Callable[[], Any]:
    def build() -> Any:
        from harness.checks.router_knobs import KnobCase
        from harness.targets.base import Knob

        return KnobCase(Knob(kind, name, default), value, tokens=8, seed=0, scale=1.0)

    return build


def _sigmoid_on_logits_renormalized() -> Any:
    from harness.strategies.routing_inputs import RoutingExample
    from reference.config import RoutingKnobs

    knobs = RoutingKnobs("sigmoid_topk_on_logits", top_k=2, renormalize=True)
    return RoutingExample(torch.tensor([[-1.0, 2.0, 0.5]]), knobs, None, None, "normal", 0)


_TWO_LAYOUTS = "a checkpoint holding layer 0's experts in both layouts: AttributeError naming no key"
_REAPPLIED = "a renaming rule re-applies to an already-converted name"

PINS: tuple[Pin, ...] = (
    Pin("checkpoint-roundtrip", "transformers", "qwen3_moe", _TWO_LAYOUTS, _two_layout_checkpoint("qwen3_moe", "proj")),
    Pin("checkpoint-roundtrip", "transformers", "mixtral", _TWO_LAYOUTS, _two_layout_checkpoint("mixtral", "w")),
    Pin("checkpoint-roundtrip", "transformers", "olmoe", _TWO_LAYOUTS, _two_layout_checkpoint("olmoe", "proj")),
    Pin("conversion-remap", "transformers", "laguna", _REAPPLIED,
        _conversion("base", "layers.1.mlp.shared_experts.gate_proj.weight")),
    Pin("conversion-remap", "transformers", "axk1", _REAPPLIED,
        _conversion("base", "layers.1.mlp.post_mlp_layernorm.weight")),
    Pin("conversion-remap", "transformers", "inkling2_text", _REAPPLIED,
        _conversion("base", "embed_tokens.embed_norm.weight")),
    Pin("conversion-remap", "transformers", "mistral_large4_text", _REAPPLIED,
        _conversion("grammar", "layers.0.mlp.experts.0.gate_proj.weight")),
    Pin("conversion-remap", "transformers", "unlimited_ocr", _REAPPLIED,
        _conversion("grammar", "layers.0.mlp.experts.0.gate_proj.weight")),
    Pin("config-spelling", "transformers", "phimoe", "num_experts_per_tok=1 is accepted and ignored (2 are used)",
        _spelling("num_local_experts", 4, "num_experts_per_tok", 1)),
    Pin("config-spelling", "transformers", "longcat_flash", "moe_topk=1 is accepted, then the forward raises",
        _spelling("n_routed_experts", 4, "moe_topk", 1)),
    Pin("router-knobs", "transformers", "deepseek_v2", "norm_topk_prob=True is declared and ignored",
        _knob("norm_topk_prob", "renormalize", False, True)),
    Pin("capturer-shape", "vllm", "synthetic", "experts per token spelled moe_k resolves to 0",
        _synthetic_capture("moe_k")),
    Pin("capturer-shape", "vllm", "synthetic", "experts per token under ffn_config resolves to 0",
        _synthetic_capture("moe_top_k", "ffn_config")),
    Pin("routing-parity", "reference-triton", "llama4_text", "the kernel ignored renormalize for this variant",
        _sigmoid_on_logits_renormalized),
)
