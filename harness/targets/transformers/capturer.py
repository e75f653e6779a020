"""transformers as a routed-experts capturer (the `capturer` capability): the model built from a config is run on
`max_tokens` tokens and the expert ids every MoE layer sends each token to are stacked as vLLM's capture buffer
holds them, [max_tokens, MoE layers, top-k].

Nothing is read back from the config: the layer count is the number of MoE blocks the forward reached and the
top-k what each block's experts received, so a config field the model ignores shows up as a wrong shape.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from harness.targets.transformers.spellings import (
    build_model,
    capture_routing,
    full_forward_runs,
    hidden_size_of,
    moe_blocks,
    routed_ids,
    skip_reason,
    vocab_size,
)
from harness.tiny_configs import discover_moe_families, moe_path
from harness.verdict import CheckSkipped, harness_limit, not_applicable


class CapturerMismatch(Exception):
    """The MoE layers of one forward did not route to as many experts per token."""


# A drawn config repeats often (a handful of top-k and layer counts per family): each is built once.
_MODELS: OrderedDict[str, torch.nn.Module] = OrderedDict()
_KEEP = 16


def _model(config: Any) -> torch.nn.Module:
    """The model of `config`, built by `build_model` or reused from an equal config's (the last _KEEP kept)."""
    key = config.to_json_string()
    if key not in _MODELS:
        _MODELS[key] = build_model(config)
        while len(_MODELS) > _KEEP:
            _MODELS.popitem(last=False)
    return _MODELS[key]


class TransformersCapturer:
    """capture(config, max_tokens) -> the [max_tokens, MoE layers reached, top-k] expert ids of the model built
    from `config`. `example_caps`: every example builds (or reuses) a model, so the ci profile draws fewer."""

    example_caps = (("dev", 5), ("ci", 10))

    def skip(self, family: str) -> str | None:
        """Why no buffer is captured for `family`: it has no model here (a synthetic new family), or the
        measurement of its config spellings does not apply (see `spellings.skip_reason`), else None."""
        if family not in discover_moe_families():
            return not_applicable(f"transformers has no model for {family!r}")
        return skip_reason(family)

    def __call__(self, config: Any, max_tokens: int) -> torch.Tensor:
        family = config.model_type
        model = _model(config)
        path = moe_path(config) or ""
        captured = capture_routing(model, vocab_size(config, path), hidden_size_of(config, path),
                                   blocks_alone=not full_forward_runs(family), tokens=max_tokens)
        layers = []
        for name, block in moe_blocks(model).items():
            if name not in captured:
                continue  # a block the forward never reached routes nothing
            experts = next(p for p in block.get_submodule("experts").parameters() if p.dim() == 3)
            ids = routed_ids(captured[name].get("experts", ()), captured[name].get("router"), int(experts.shape[0]))
            if ids is None:
                raise CheckSkipped(harness_limit(f"{name}: its experts receive no [T, K] ids and its router returns "
                                                 "no sparse [T, E] routing, the two forms the capturer reads"))
            ids = ids.reshape(-1, ids.shape[-1])
            if ids.shape[0] != max_tokens:
                continue  # it routes another sequence than the input tokens (a diffusion decoder's canvas)
            layers.append((name, ids))
        widths = {name: int(ids.shape[-1]) for name, ids in layers}
        if len(set(widths.values())) > 1:
            raise CapturerMismatch(f"the MoE layers route to different numbers of experts per token: {widths}")
        if not layers:
            return torch.zeros(max_tokens, 0, 0, dtype=torch.int32)
        return torch.stack([ids for _, ids in layers], dim=1)
