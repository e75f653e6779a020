"""Target `transformers`: the installed transformers' own MoE blocks, one per discovered family.

Each family's tiny model is built once per process; a case gets a fresh copy of its first MoE block
with seeded weights. Families whose block the reference does not model are skipped with the reason.
"""

from __future__ import annotations

import torch

from harness.findings import load_known_failures
from harness.targets.base import BlockCap, ConfigSpellingCap, RouterKnobsCap, Target
from harness.targets.transformers import knobs, spellings
from harness.targets.transformers.blocks import RealMoEBlock, real_block, skip_reason
from harness.targets.transformers.capturer import TransformersCapturer
from harness.targets.transformers.checkpoint import CHECKPOINT_LOADER
from harness.targets.transformers.config_variants import CONFIG_VARIANTS
from harness.targets.transformers.conversion import CONVERSION
from harness.targets.transformers.saved_model import MODEL_LOADER
from harness.tiny_configs import discover_moe_families
from reference.config import MoESpec
from reference.moe import init_block


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> RealMoEBlock:
    """A fresh copy of the family's real block, every tensor seeded (no knob left at identity)."""
    return init_block(real_block(spec.family, spec), seed).to(dtype)


def make_target() -> Target:
    import transformers

    return Target(
        name="transformers",
        version=transformers.__version__,
        description="the installed transformers' own MoE blocks, configs, routers, conversion rules and loader",
        block=BlockCap(build, skip=skip_reason),
        checkpoint_loader=CHECKPOINT_LOADER,
        capturer=TransformersCapturer(),
        conversion=CONVERSION,
        config_spelling=ConfigSpellingCap(spellings.spellings, spellings.used, spellings.FORMS,
                                          skip=spellings.skip_reason),
        router_knobs=RouterKnobsCap(knobs.knobs, knobs.build, skip=knobs.skip_reason),
        families=discover_moe_families(),
        known_failures=load_known_failures(__file__, "transformers"),
        config_variants=CONFIG_VARIANTS,
        model_loader=MODEL_LOADER,
    )
