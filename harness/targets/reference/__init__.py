"""Target `reference`: our own oracle, run through the same checks as everyone else."""

from __future__ import annotations

from typing import Any

import torch

import harness
from harness.findings import load_known_failures
from harness.targets.base import (
    BlockCap,
    CheckpointLoaderCap,
    ExpertMappingCap,
    RemapCap,
    RoutingCap,
    Target,
)
from reference.capturer import RoutedExpertsCapturer
from reference.checkpoint import (
    BLOCKS,
    PREFIXES,
    REFERENCE_SCHEMA,
    KeySchema,
    make_expert_params_mapping,
    remap,
)
from reference.loader import load_checkpoint
from reference.moe import PaddedMoERunner, build_block
from reference.routing import route
from reference.variants import ROUTING_VARIANTS

ALL_SCHEMAS = tuple(
    KeySchema(prefix, block, layout, names)
    for prefix in PREFIXES
    for block in BLOCKS
    for layout, names in (("per_expert", "proj"), ("per_expert", "w"), ("fused", "proj"))
)


def _capture_buffer(config: Any, max_tokens: int) -> torch.Tensor:
    return RoutedExpertsCapturer(config, max_tokens).buffer


def make_target() -> Target:
    return Target(
        name="reference",
        version=harness.__version__,
        description="moe-harness's torch reference (the oracle itself)",
        routing=RoutingCap(route, ROUTING_VARIANTS),
        remap=RemapCap(remap, ALL_SCHEMAS, REFERENCE_SCHEMA),
        expert_mapping=ExpertMappingCap(new=make_expert_params_mapping),
        capturer=_capture_buffer,
        block=BlockCap(build_block),
        padded_runner=PaddedMoERunner,
        checkpoint_loader=CheckpointLoaderCap(load_checkpoint, lambda family: ALL_SCHEMAS, formats=None),
        known_failures=load_known_failures(__file__, "reference"),
    )
