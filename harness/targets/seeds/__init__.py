"""Targets `seeds-buggy`, `seeds-lookahead` and `seeds-fixed`: the seed reports' code before and after."""

from __future__ import annotations

import functools
from collections.abc import Callable

from harness.findings import load_known_failures
from harness.targets.base import (
    BlockCap,
    CheckpointLoaderCap,
    ExpertMappingCap,
    RemapCap,
    Target,
)
from harness.targets.seeds import seed_000_gemma4_routing_closure as gemma4_routing_closure
from harness.targets.seeds import seed_001_capturer_top_k as capturer_top_k
from harness.targets.seeds import seed_002_gemma4_remap as gemma4_remap
from harness.targets.seeds import seed_003_expert_params_mapping as expert_params_mapping
from harness.targets.seeds import seed_004_moe_runner_padding as moe_runner_padding
from reference.loader import load_checkpoint

GEMMA4 = ("gemma4",)


def _loader(remap_fn: Callable[[str], str]) -> CheckpointLoaderCap:
    """The reference loader with seed 002's remap in its place, as vLLM's Gemma4 loader uses it."""
    load = functools.partial(load_checkpoint, remap_fn=remap_fn, produces=gemma4_remap.PRODUCES)
    return CheckpointLoaderCap(load, lambda family: gemma4_remap.ACCEPTS if family in GEMMA4 else ())


def make_buggy() -> Target:
    return Target(
        name="seeds-buggy",
        version="pre-fix",
        description="the five seed bugs as they shipped (vLLM PRs 42250, 41401, 41206, 40671, 40794)",
        remap=RemapCap(gemma4_remap.remap_buggy, gemma4_remap.ACCEPTS, gemma4_remap.PRODUCES),
        checkpoint_loader=_loader(gemma4_remap.remap_buggy),
        expert_mapping=ExpertMappingCap(
            new=expert_params_mapping.module_entry_without_default, old=expert_params_mapping.classmethod_entry
        ),
        capturer=capturer_top_k.buffer_buggy,
        block=BlockCap(gemma4_routing_closure.build_buggy, GEMMA4),
        padded_runner=moe_runner_padding.runner_buggy,
        known_failures=load_known_failures(__file__, "seeds-buggy"),
    )


def make_lookahead() -> Target:
    return Target(
        name="seeds-lookahead",
        version="pr-41206-summary",
        description="seed 002's remap with the look-ahead regex one summary quotes",
        remap=RemapCap(gemma4_remap.remap_lookahead, gemma4_remap.ACCEPTS, gemma4_remap.PRODUCES),
        checkpoint_loader=_loader(gemma4_remap.remap_lookahead),
        known_failures=load_known_failures(__file__, "seeds-lookahead"),
    )


def make_fixed() -> Target:
    return Target(
        name="seeds-fixed",
        version="merged",
        description="the five seed fixes as merged",
        remap=RemapCap(gemma4_remap.remap_fixed, gemma4_remap.ACCEPTS, gemma4_remap.PRODUCES),
        checkpoint_loader=_loader(gemma4_remap.remap_fixed),
        expert_mapping=ExpertMappingCap(
            new=expert_params_mapping.module_entry, old=expert_params_mapping.classmethod_entry
        ),
        capturer=capturer_top_k.buffer_fixed,
        block=BlockCap(gemma4_routing_closure.build_fixed, GEMMA4),
        padded_runner=moe_runner_padding.runner_fixed,
        known_failures=load_known_failures(__file__, "seeds-fixed"),
    )
