"""Whole-model inputs: the seed that draws a checkpoint's weights and its token ids, how a model's weights are
seeded, and its logits over the ids. The checkpoint itself is transformers' to write
(`harness.targets.transformers.saved_model.write_model_checkpoint`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn


@dataclass(frozen=True)
class ModelInput:
    """`tokens` token ids drawn from `seed`, which also seeds every weight of the checkpoint; its config.json read in
    `form`."""

    tokens: int
    seed: int
    form: str


def model_inputs(forms: tuple[str, ...]) -> st.SearchStrategy[ModelInput]:
    """2..16 tokens (a decode step and a short prompt), a seed in 0..2**16, one of `forms`. Shrinks toward 2 tokens,
    seed 0, the first form."""
    return st.builds(ModelInput, tokens=st.integers(2, 16), seed=st.integers(0, 2**16), form=st.sampled_from(forms))


def seed_weights(model: nn.Module, seed: int) -> None:
    """Every parameter, and every float buffer the checkpoint saves whose name ends in `bias` (routing correction
    biases are buffers in transformers), gets seeded values: matrices normal with variance 1/fan-in, so activations
    keep their size through the layers; vectors (norm weights, biases, per-expert scales) 1 + N(0, 0.25²), around a
    norm's identity and of either sign nowhere that a scale would flip. Other buffers keep the model's values:
    non-persistent ones are constants (rotary frequencies)."""
    gen = torch.Generator().manual_seed(seed)
    saved = model.state_dict()
    seeded: dict[str, torch.Tensor] = dict(model.named_parameters())
    seeded.update((name, buffer) for name, buffer in model.named_buffers()
                  if name in saved and name.endswith("bias") and buffer.is_floating_point())
    with torch.no_grad():
        for _, tensor in sorted(seeded.items()):
            if tensor.dim() > 1:
                values = torch.randn(tensor.shape, generator=gen, dtype=torch.float64) / tensor.shape[-1] ** 0.5
            else:
                values = 1 + 0.25 * torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
            tensor.copy_(values.to(tensor.dtype))


def token_ids(seed: int, tokens: int, vocab_size: int) -> tuple[int, ...]:
    """`tokens` ids below `vocab_size`, drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(int(i) for i in torch.randint(0, vocab_size, (tokens,), generator=gen))


def logits_of(model: nn.Module, ids: tuple[int, ...]) -> torch.Tensor:
    """The model's logits [tokens, vocab] (float32) over `ids`, one sequence, no cache (an encoder-decoder's decoder
    reads the same ids). Torch's generator is seeded for the forward and restored after it: a model that draws
    random numbers as it runs (a diffusion LM's noise) draws the same ones on every call."""
    inputs = torch.tensor([ids])
    extra = {"decoder_input_ids": inputs} if getattr(model.config, "is_encoder_decoder", False) else {}
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        out = model(input_ids=inputs, use_cache=False, **extra)
    return out.logits[0].float()
