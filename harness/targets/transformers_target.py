"""Target `transformers`: the installed transformers' own MoE blocks, one per discovered family.

Each family's tiny model is built once per process; a case gets a fresh copy of its first MoE block
with seeded weights. Families whose block the reference does not model are skipped with the reason.
"""

from __future__ import annotations

import functools

import torch

from harness.families import discover_moe_families, tiny_spec
from harness.targets import transformers_config, transformers_knobs
from harness.targets.base import BlockCap, ConfigSpellingCap, RouterKnobsCap, Target, load_known_failures
from harness.targets.transformers_blocks import RealMoEBlock, UnmappedBlock, real_block
from harness.targets.transformers_checkpoint import CHECKPOINT_LOADER
from harness.targets.transformers_conversion import CONVERSION
from reference.config import UNSUPPORTED_FAMILIES, MoESpec
from reference.moe import init_block


def build(spec: MoESpec, seed: int = 0, dtype: torch.dtype = torch.float32) -> RealMoEBlock:
    """A fresh copy of the family's real block, every tensor seeded (no knob left at identity)."""
    return init_block(real_block(spec.family, spec), seed).to(dtype)


@functools.cache
def skip_reason(family: str) -> str | None:
    """Why the family has no block to run here (not modelled, or its shrunk model cannot be built), or None."""
    if family in UNSUPPORTED_FAMILIES:
        return f"the reference does not model {family}: {UNSUPPORTED_FAMILIES[family]}"
    try:
        real_block(family, tiny_spec(family)).reference_state()
    except UnmappedBlock as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - our shrunk config or builder choice, not a finding by itself
        first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
        return f"its tiny model cannot be built here ({type(exc).__name__}: {first_line})"
    return None


def make_target() -> Target:
    import transformers

    return Target(
        name="transformers",
        version=transformers.__version__,
        description="the installed transformers' own MoE blocks, configs, routers, conversion rules and loader",
        block=BlockCap(build, skip=skip_reason),
        checkpoint_loader=CHECKPOINT_LOADER,
        conversion=CONVERSION,
        config_spelling=ConfigSpellingCap(transformers_config.spellings, transformers_config.used,
                                          transformers_config.FORMS, skip=transformers_config.skip_reason),
        router_knobs=RouterKnobsCap(transformers_knobs.knobs, transformers_knobs.build, skip=transformers_knobs.skip_reason),
        families=discover_moe_families(),
        known_failures=load_known_failures("transformers"),
    )
