"""What the oracle knows about each MoE family that its config does not say: one `FamilyFacts` record per family.

A record names the code it describes (the MoE block classes of the family's transformers model), the routing
its code fixes, its block layout (activation, biases, input weighting, how a shared expert is gated and added)
and, where the reference cannot model it, why. Everything else about a family is read from its config
(`reference/config.py`). `*_text` twins are aliases of one record.

Facts are keyed by the code they describe: a family with no record of its own whose modeling code holds a
described block class under a new name (transformers' modular copies: `Inkling2LoopSparseMoeBlock` is
`Inkling2SparseMoeBlock` renamed) inherits that record (`facts_for`). A block class nobody has described is
reported by name (`undescribed`), never compared against a default guess.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FamilyFacts:
    """One family as the oracle knows it.

    `routing` is the variant its code fixes (None: inferred from the config's knobs) and `renormalize` whether
    its code always (True) or never (False) renormalises the picks (None: the config's knob). `shared` is how a
    shared expert joins the routed output when the code, not the config, decides: `sigmoid_gate` (scaled by
    sigmoid(shared_expert_gate(x)) whenever the config has shared experts), `always_one` (one shared expert of
    the expert width, whatever the counts say), `parallel_dense` (a dense MLP of `intermediate_size` running
    beside the experts). `gated` False: its experts (and shared experts) are down(act(up x)), with no gate
    projection (nemotron_h). `post_norm`: the block's output (routed + shared) passes an RMSNorm with a weight
    [H] and the config's `rms_norm_eps` (axk1). `unmodelled` says why the reference cannot build its block;
    `unsupported` why it is not a routed top-k MoE the reference models at all, and `routed_experts` False that
    the family holds no routed-experts block at all (so a check over blocks does not apply to it).
    """

    name: str
    blocks: tuple[str, ...] = ()  # the MoE block classes (of its transformers model) these facts describe
    aliases: tuple[str, ...] = ()
    routing: str | None = None
    renormalize: bool | None = None
    activation: str | None = None  # overrides the config's activation (swiglu_oai)
    router_bias: bool = False
    expert_bias: bool = False  # gate_up_proj_bias [E, 2I] and down_proj_bias [E, H]
    weight_on_input: bool = False  # the routing weight scales the expert's input, not its output
    shared: str | None = None
    gated: bool = True
    post_norm: bool = False
    unmodelled: str | None = None
    unsupported: str | None = None
    routed_experts: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


_PER_MODALITY = "moe_intermediate_size is a per-modality list (text, vision); one expert width is modelled"

FACTS: tuple[FamilyFacts, ...] = (
    FamilyFacts("afmoe", ("AfmoeSparseMoeBlock",), routing="sigmoid_bias", renormalize=True),
    FamilyFacts("aria", ("AriaTextMoELayer",), ("aria_text",), routing="topk_softmax", renormalize=True),
    FamilyFacts("axk1", ("AXK1MoE",), post_norm=True),  # DeepSeek-V3's block, its output RMS-normed
    # AXK2 fills the dropped groups' scores with 0.0 (its code: "to match reference implementation").
    FamilyFacts("axk2", ("AXK2MoE",), routing="grouped_zero_filled"),
    FamilyFacts("beam", ("BeamMoE",)),  # DeepSeek-V3 grouped routing; routed_scaling_factor applied by the block
    FamilyFacts("cohere2_moe", ("Cohere2MoeSparseMoeBlock",)),
    FamilyFacts("deepseek_v2", ("DeepseekV2Moe",)),
    FamilyFacts("deepseek_v3", ("DeepseekV3MoE",)),
    FamilyFacts("deepseek_v4", ("DeepseekV4SparseMoeBlock",),
                unmodelled="its first layers route by a hash of the token ids (forward needs input_ids); not modelled"),
    FamilyFacts("diffusion_gemma", ("DiffusionGemmaEncoderTextLayer",), ("diffusion_gemma_text",), routing="gemma4",
                renormalize=True, shared="parallel_dense"),  # gemma4's MoE layer (no enable_moe_block flag)
    FamilyFacts("doge", ("DogeCDMoE",),
                unmodelled="its experts are product-key retrieval experts: the router scores sqrt(E) x sqrt(E) key "
                           "pairs and each expert is one neuron held as rows of two embeddings (down_embed, up_embed);"
                           " the reference's experts are fused MLPs under a Linear [E, H] router"),
    FamilyFacts("dots1", ("Dots1MoE",)),
    FamilyFacts("dots3_note", ("Dots3NoteTextMoE",), ("dots3_note_text",)),
    FamilyFacts("dots3_note_vision_encoder",
                unsupported="expert counts are per-layer (heterogeneous config); one global count is modelled"),
    FamilyFacts("ernie4_5_moe", ("Ernie4_5_MoeSparseMoeBlock",), routing="softmax_bias",
                renormalize=True),  # renormalises always (sum clamped to moe_norm_min)
    FamilyFacts("ernie4_5_vl_moe", aliases=("ernie4_5_vl_moe_text",), unsupported=_PER_MODALITY),
    FamilyFacts("exaone_moe", ("ExaoneMoeSparseMoEBlock",)),
    FamilyFacts("flex_olmo", ("FlexOlmoSparseMoeBlock",)),
    # Sigmoid scores without a bias: its top K of sigmoid(l) are the top K of l; renormalised by norm_topk_prob.
    FamilyFacts("flint", ("FlintSparseMoeBlock",), routing="sigmoid_topk_on_logits"),
    FamilyFacts("gemma4", ("Gemma4TextDecoderLayer",), ("gemma4_text",), routing="gemma4", renormalize=True,
                shared="parallel_dense"),
    FamilyFacts("glm4_moe", ("Glm4MoeMoE",)),
    FamilyFacts("glm4_moe_lite", ("Glm4MoeLiteMoE",)),
    FamilyFacts("glm4v_moe", ("Glm4vMoeTextMoE",), ("glm4v_moe_text",)),
    # Its experts and shared MLP clamp gate (above) and up (both sides) at swiglu_limit before silu(gate) * up.
    FamilyFacts("glm5_next", ("Glm5NextTextMoE",), ("glm5_next_text",), activation="swiglu_clamp"),
    FamilyFacts("gpt_oss", ("GptOssMLP",), routing="topk_softmax", renormalize=True, activation="swiglu_oai",
                router_bias=True, expert_bias=True),
    FamilyFacts("granitemoe", ("GraniteMoeMoE",), routing="topk_softmax", renormalize=True),
    FamilyFacts("granitemoe_swa", ("GraniteMoeSWAMoE",), routing="topk_softmax", renormalize=True),
    FamilyFacts("granitemoehybrid", ("GraniteMoeHybridMoE",), routing="topk_softmax", renormalize=True),
    FamilyFacts("granitemoeshared", ("GraniteMoeSharedMoE",), routing="topk_softmax", renormalize=True),
    FamilyFacts("hunyuan_v1_moe", ("HunYuanMoEV1Moe",), routing="softmax_topk", renormalize=True,
                shared="always_one"),  # its shared MLP exists whatever the expert counts say
    FamilyFacts("hy_v3", ("HYV3MoE",), routing="sigmoid_bias", renormalize=True),
    FamilyFacts("hy_v4", ("HYV4MoE",)),
    FamilyFacts("inkling2", ("Inkling2SparseMoeBlock",), ("inkling2_text",), routing="sigmoid_bias",
                renormalize=True, activation="swiglu_softcap"),  # renormalises always; the config has no flag
    FamilyFacts("inkling_text", ("InklingMoE",),
                unmodelled="its router scores the shared experts beside the routed ones (weight [E + n_shared, H]) "
                           "and weighs both with one normalisation (sigmoids of the K picks and of the shared "
                           "experts, summing to route_scale x a learned global_scale); the reference's shared "
                           "experts are added ungated or sigmoid-gated, outside the routing"),
    FamilyFacts("jamba", ("JambaSparseMoeBlock",), routing="softmax_topk", renormalize=False),
    FamilyFacts("kimi_k25", ("DeepseekV3MoE",)),
    FamilyFacts("kimi_linear", ("KimiLinearMoE",)),
    FamilyFacts("kolibri1", ("Kolibri1SparseMoeBlock",), routing="sigmoid_logit_bias"),
    FamilyFacts("laguna", ("LagunaSparseMoeBlock",), routing="sigmoid_bias", renormalize=True),
    FamilyFacts("lara_mini", ("LaraMiniSparseMoeBlock",)),  # transformers 5.24; its shared expert is added ungated
    FamilyFacts("llama4", ("Llama4TextMoe",), ("llama4_text",), routing="sigmoid_topk_on_logits", renormalize=False,
                weight_on_input=True, shared="always_one"),
    FamilyFacts("jetmoe", ("JetMoeMoE",),
                unmodelled="its experts are two ParallelExperts modules (input_linear, output_linear) outside an "
                           "experts module, and the block adds an output bias [H]; the reference block has no "
                           "output bias"),
    FamilyFacts("longcat_flash", ("LongcatFlashMoE",),
                unmodelled="zero-compute identity experts (zero_expert_num) are routed beside the MLP experts: its "
                           "router scores E + zero_expert_num experts and an identity pick adds w * x; the "
                           "reference routes MLP experts only"),
    FamilyFacts("mellum", ("MellumSparseMoeBlock",)),
    FamilyFacts("mimo_v2_flash", ("MiMoV2FlashMoE",)),
    FamilyFacts("minimax", ("MiniMaxSparseMoeBlock",), routing="softmax_topk", renormalize=True),
    FamilyFacts("minimax_m2", ("MiniMaxM2SparseMoeBlock",), routing="sigmoid_bias",
                renormalize=True),  # its router always renormalises; the config has no flag
    FamilyFacts("minimax_m3_vl", ("MiniMaxM3VLSparseMoeBlock",), ("minimax_m3_vl_text",), routing="sigmoid_bias",
                renormalize=True, activation="swiglu_oai"),  # its shared MLP too
    FamilyFacts("mistral4", ("Mistral4MoE",), routing="grouped_softmax"),
    FamilyFacts("mistral_large4", ("MistralLarge4TextMoE",), ("mistral_large4_text",), routing="grouped_softmax",
                renormalize=True),
    FamilyFacts("mixtral", ("MixtralSparseMoeBlock",), routing="softmax_topk", renormalize=True),
    FamilyFacts("muse_spark", ("MuseSparkMoE",), ("muse_spark_text",),
                unmodelled="its experts run in a projected latent space (pre_expert_proj, a centered RMSNorm, the "
                           "experts with their own post_expert_norm, post_expert_proj); the reference's experts act "
                           "on the hidden states"),
    # Non-gated experts and shared MLP, down(relu2(up x)) (mlp_hidden_act); grouped routing from the config.
    FamilyFacts("nemotron_h", ("NemotronHMoE",), gated=False),
    FamilyFacts("nllb-moe", unsupported="encoder-decoder top-2 capacity routing fixed by the router class; no top-k field"),
    FamilyFacts("olmoe", ("OlmoeSparseMoeBlock",)),
    FamilyFacts("openai_privacy_filter", ("OpenAIPrivacyFilterMLP",), routing="topk_softmax", renormalize=True,
                activation="swiglu_oai", router_bias=True, expert_bias=True),
    FamilyFacts("phimoe", ("PhimoeSparseMoeBlock",), routing="softmax_topk", renormalize=True,
                unmodelled="sparsemixer routing (jitter-masked top-2 with a second pass) is not a modelled variant"),
    FamilyFacts("qwen2_moe", ("Qwen2MoeSparseMoeBlock",), shared="sigmoid_gate"),
    FamilyFacts("qwen3_5_moe", ("Qwen3_5MoeSparseMoeBlock",), ("qwen3_5_moe_text",), routing="softmax_topk",
                renormalize=True, shared="sigmoid_gate"),
    FamilyFacts("qwen3_moe", ("Qwen3MoeSparseMoeBlock",)),
    FamilyFacts("qwen3_next", ("Qwen3NextSparseMoeBlock",), shared="sigmoid_gate"),
    FamilyFacts("qwen3_omni_moe_thinker", ("Qwen3OmniMoeThinkerTextSparseMoeBlock",), ("qwen3_omni_moe_text",)),
    FamilyFacts("qwen3_vl_moe", ("Qwen3VLMoeTextSparseMoeBlock",), ("qwen3_vl_moe_text",), routing="softmax_topk",
                renormalize=True),  # no norm_topk_prob field; the router always renormalises
    FamilyFacts("qwen4_exp", ("Qwen4ExpTextSparseMoeBlock",), ("qwen4_exp_text",), shared="sigmoid_gate"),
    FamilyFacts("solar_open", ("SolarOpenMoE",)),
    # Always renormalises; scaled by moe_router_scaling_factor in the block; a shared MLP of share_expert_dim.
    FamilyFacts("step3p7", ("Step3p7SparseMoeBlock",), ("step3p5",), routing="sigmoid_bias", renormalize=True),
    FamilyFacts("switch_transformers",
                unsupported="encoder-decoder top-1 capacity routing fixed by the router class; no top-k field"),
    FamilyFacts("unlimited_ocr", ("UnlimitedOcrTextMoe",), ("unlimited_ocr_text",)),
    FamilyFacts("vitpose_backbone", unsupported="num_experts picks a dataset-specific head, not routed experts",
                routed_experts=False),
    FamilyFacts("zaya", ("ZayaSparseMoeBlock",),
                unmodelled="its router is an MLP (down_proj, RMSNorm, fc1, fc2, out_proj) carrying state between "
                           "layers, over E + 1 classes whose last is a skip expert; the reference's router is one "
                           "Linear [E, H] over E MLP experts"),
)

BY_NAME: dict[str, FamilyFacts] = {name: f for f in FACTS for name in f.names}
UNSUPPORTED_FAMILIES: dict[str, str] = {n: f.unsupported for n, f in BY_NAME.items() if f.unsupported}


def facts_named(*names: str) -> FamilyFacts | None:
    """The record of the first of `names` (family names, outermost first) that has one, or None."""
    return next((BY_NAME[n] for n in names if n in BY_NAME), None)


def facts_for(config: Any, *names: str) -> FamilyFacts | None:
    """The record describing the family of `config`: by name (`names`, outermost first), else the record of a
    described block class whose code the config's modeling module holds under another name, else None."""
    return facts_named(*names) or _facts_by_code(type(config).__module__)


# --- matching by code -------------------------------------------------------------------------------------------

def _modeling_module(config_module: str) -> Any:
    """The modeling module beside a transformers model's configuration module, or None (any other config)."""
    if ".configuration_" not in config_module:
        return None
    try:
        return importlib.import_module(config_module.replace(".configuration_", ".modeling_"))
    except Exception:  # noqa: BLE001 - no modeling module: nothing to match by code
        return None


def _prefix(module: Any) -> str | None:
    """The class-name prefix of a transformers modeling module (`Inkling2Loop` of `Inkling2LoopPreTrainedModel`)."""
    names = [n.removesuffix("PreTrainedModel") for n in vars(module) if n.endswith("PreTrainedModel")
             and n != "PreTrainedModel" and isinstance(vars(module)[n], type)
             and vars(module)[n].__module__ == module.__name__]
    return min(names, key=len) if names else None


def code_fingerprint(cls: type) -> str | None:
    """A digest of `cls`'s source and of the same module's classes it names (its router, its experts), with the
    module's class-name prefix written out, so a renamed copy has the digest of its original; None without source."""
    module = inspect.getmodule(cls)
    prefix = _prefix(module) if module else None
    if module is None or prefix is None:
        return None
    try:
        own = inspect.getsource(cls)
        # Only the module's own classes: its config is imported from elsewhere and differs between copies.
        named = sorted({n for n in re.findall(r"\b" + re.escape(prefix) + r"\w+", own)
                        if isinstance(found := vars(module).get(n), type) and found.__module__ == module.__name__
                        and n != cls.__name__})
        sources = [own] + [inspect.getsource(vars(module)[n]) for n in named]
    except (OSError, TypeError):
        return None
    text = re.sub(r"\b" + re.escape(prefix) + r"(?=[A-Z_])", "<family>", "\n".join(sources))
    return hashlib.sha256(text.encode()).hexdigest()


def _family_module(facts: FamilyFacts) -> Any:
    """The transformers modeling module named after the record's family, or None."""
    package = facts.name.replace("-", "_")
    return _modeling_module(f"transformers.models.{package}.configuration_{package}")


def _described_class(facts: FamilyFacts, block: str) -> type | None:
    module = _family_module(facts)
    if module is None:
        return None
    found = vars(module).get(block)
    return found if isinstance(found, type) else None


@functools.cache
def _described_fingerprints() -> dict[str, tuple[str, FamilyFacts]]:
    """Fingerprint -> (class name, record) for every described block class importable here."""
    out: dict[str, tuple[str, FamilyFacts]] = {}
    for facts in FACTS:
        for block in facts.blocks:
            cls = _described_class(facts, block)
            digest = code_fingerprint(cls) if cls is not None else None
            if digest is not None:
                out.setdefault(digest, (block, facts))
    return out


def describing(cls: type) -> FamilyFacts | None:
    """The record describing block class `cls`: by its name, else by its code, else None (once per class: the
    transformers target asks for every block it builds, and fingerprinting reads source)."""
    return _describing(cls)


@functools.cache
def _describing(cls: type) -> FamilyFacts | None:
    by_name = [f for f in FACTS if cls.__name__ in f.blocks]
    if by_name:
        return by_name[0]
    digest = code_fingerprint(cls)
    hit = _described_fingerprints().get(digest) if digest else None
    return hit[1] if hit else None


@functools.cache
def _facts_by_code(config_module: str) -> FamilyFacts | None:
    module = _modeling_module(config_module)
    if module is None:
        return None
    prefix = _prefix(module)
    for digest, (block, facts) in _described_fingerprints().items():
        own_module = _family_module(facts)
        own_prefix = _prefix(own_module) if own_module is not None else None
        candidate = vars(module).get(f"{prefix}{block.removeprefix(own_prefix or '')}") if prefix else None
        if isinstance(candidate, type) and code_fingerprint(candidate) == digest:
            return facts
    return None


def undescribed(cls: type) -> str | None:
    """Why block class `cls` cannot be compared yet (no record describes its code), or None when one does."""
    if describing(cls) is not None:
        return None
    return (f"block class {cls.__name__} ({cls.__module__}) is not described yet: no FamilyFacts record in "
            "reference/families.py names it or holds its code under another name")
