"""Target `sglang`: SGLang 0.5.23's own MoE code that runs on a CPU without its compiled kernels, in its own
environment (`environments.toml`: the wheel without its CUDA dependencies, beside torch 2.13.0+cpu).

- routing: `select_experts` with the `TopKConfig` a model builds, on its native path (`routing.py`);
- remap: the `hf_to_sglang_mapper` of the models that apply it to checkpoint keys (the granite MoE models;
  `mappers.py`);
- expert_mapping: `FusedMoE.make_expert_params_mapping` (no redundant experts in its signature: SGLang maps physical
  to logical experts at dispatch);
- capturer: `RoutedExpertsCapturer` sized by SGLang's own config resolution from a config directory (`capture.py`);
- block: the MoE block each SGLang model builds for its MoE layers, found in the model its loader builds on one CPU
  rank (`blocks.py`);
- weight_loader: whole models built by SGLang's loader from a checkpoint directory and loaded by their own
  `load_weights`, one CPU rank, each in a fork of a server that imported SGLang once (`loading.py`).
- differential: the checkpoint transformers writes, loaded by SGLang's loader and by transformers', each first MoE
  block held to the reference (`differential.py`).

SGLang is imported only inside `make_target`; where it does not import, the target is unavailable with the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

import torch

from harness.findings import load_known_failures
from harness.targets.base import (
    BlockCap,
    DifferentialCap,
    ExpertMappingCap,
    RoutingCap,
    Target,
    WeightLoaderCap,
)
from harness.targets.loading import TargetUnavailable

INSTALL_HINT = ("`moe-harness run --target sglang` runs it in its own environment (sglang 0.5.23, built on demand; "
                "`moe-harness env build sglang`)")


@dataclass(frozen=True)
class Capturer:
    """SGLang's routed-experts capture for a config (`capture.py`); it writes each MoE layer's routing at the decoder
    layer's own index, so its buffer has a slot for every decoder layer."""

    layer_axis: str = "decoder"

    def __call__(self, config: Any, max_tokens: int) -> torch.Tensor:
        from harness.targets.sglang.capture import capture_buffer

        return capture_buffer(config, max_tokens)


def make_target() -> Target:
    """The sglang Target; TargetUnavailable (with the reason) where SGLang's MoE code does not import."""
    # Its quantization modules warn at import that their kernels need a GPU: said once here, not per case.
    warnings.filterwarnings("ignore", message=r"Only CUDA.* support")
    try:
        from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
    except ImportError as exc:
        raise TargetUnavailable(f"sglang is not importable here ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    except Exception as exc:  # noqa: BLE001 - its import probes the platform; any failure means "not here"
        raise TargetUnavailable(f"importing sglang failed ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    from harness.targets.sglang import blocks, differential, loading, mappers, routing
    from harness.tiny_configs import discover_moe_families

    return Target(
        name="sglang",
        version=metadata.version("sglang"),
        description="SGLang's MoE code on the CPU: select_experts (native path), FusedMoE's expert params mapping, "
                    "the routed-experts capturer as its config resolution sizes it, its MoE blocks, its model loader",
        routing=RoutingCap(routing.route, tuple(routing.SCORING), group_scores=routing.GROUP_SCORES_OF_SOFTMAX),
        remap=replace(mappers.remap_cap("granitemoe"), for_family=mappers.remap_cap, skip=mappers.skip_reason,
                      runs_over=discover_moe_families()),
        expert_mapping=ExpertMappingCap(new=FusedMoE.make_expert_params_mapping, redundant=False),
        capturer=Capturer(),
        block=BlockCap(blocks.build, skip=blocks.skip_reason),
        weight_loader=WeightLoaderCap(loading.load, loading.SHARDINGS, loading.FUSED_PARTS, skip=loading.skip_reason,
                                      runs_over=discover_moe_families(), isolated_writer=True),
        differential=DifferentialCap(differential.run, skip=differential.skip_reason, runs_over=discover_moe_families()),
        families=discover_moe_families(),
        known_failures=load_known_failures(__file__, "sglang"),
    )
