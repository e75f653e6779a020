"""What each built-in target must do: the seed bugs each check must catch, as data."""

# (target, check, family) cases that must fail: each seed bug, caught by the property written for it.
MUST_FAIL = {
    ("seeds-buggy", "functional-call", "gemma4"): "seed 000: routing closure captures per_expert_scale",
    ("seeds-buggy", "capturer-shape", "gemma4"): "seed 001: capturer reads only num_experts_per_tok",
    ("seeds-buggy", "capturer-shape", "synthetic"): "seed 001: a new family's top-k spelling",
    ("seeds-buggy", "remap-idempotence", "gemma4"): "seed 002: .moe re-applied, .moe.moe.experts",
    ("seeds-lookahead", "remap-idempotence", "gemma4"): "seed 002 as one summary quotes it (look-ahead)",
    ("seeds-buggy", "checkpoint-roundtrip", "gemma4"): "seed 002's remap inside a loader: .moe keys lost",
    ("seeds-lookahead", "checkpoint-roundtrip", "gemma4"): "seed 002 (look-ahead regex) inside a loader",
    ("seeds-buggy", "expert-mapping", "any"): "seed 003: new entry point lost a default",
    ("seeds-buggy", "unpad-before-add", "gemma4"): "seed 004: padded routed output added before trimming",
    ("seeds-buggy", "unpad-before-add", "qwen2_moe"): "seed 004 with a sigmoid-gated shared expert",
    ("seeds-buggy", "unpad-before-add", "deepseek_v3"): "seed 004 with plain shared experts",
    ("seeds-buggy", "unpad-before-add", "llama4_text"): "seed 004 with llama4's always-present shared expert",
}

MUST_PASS_TARGETS = ("reference", "seeds-fixed", "reference-triton")
