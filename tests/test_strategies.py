"""Strategies generate what they claim."""

from __future__ import annotations

import torch
from hypothesis import given, settings

from harness.strategies.keys import checkpoint_keys
from harness.strategies.padding import padded_dims
from harness.strategies.routing_inputs import routing_examples
from harness.targets.reference import ALL_SCHEMAS
from reference.checkpoint import REFERENCE_SCHEMA, parse_expert_key


@settings(max_examples=50, deadline=None)
@given(checkpoint_keys(ALL_SCHEMAS, REFERENCE_SCHEMA))
def test_checkpoint_keys_parse_and_count(ckpt) -> None:
    keys = ckpt.keys()
    assert len(keys) == len(set(keys))
    assert all(parse_expert_key(k) is not None for k in keys)
    per_layer = 2 if ckpt.schema.layout == "fused" else 3 * ckpt.num_experts * len(ckpt.suffixes)
    assert len(keys) == ckpt.num_layers * per_layer
    assert len(ckpt.expected()) == len(keys)


@given(padded_dims())
def test_padded_dims_in_range(dim) -> None:
    assert 1 <= dim.hidden <= 8192
    if dim.alignment == "512B":
        assert dim.elements * torch.empty((), dtype=dim.dtype).element_size() == 512


@settings(max_examples=100, deadline=None)
@given(routing_examples())
def test_routing_examples_are_valid(ex) -> None:
    t, e = ex.logits.shape
    assert 1 <= ex.knobs.top_k <= e and t >= 1
    if ex.knobs.variant == "grouped":
        assert e % ex.knobs.n_group == 0
        assert ex.knobs.top_k <= ex.knobs.topk_group * (e // ex.knobs.n_group)
    if ex.style == "neg_inf":
        assert (torch.isfinite(ex.logits.float()).sum(-1) >= ex.knobs.top_k).all()
