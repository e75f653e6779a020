"""Checkpoint key schemas (NOTES §5) and whole checkpoints' key sets drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from reference.checkpoint import BLOCKS, PREFIXES, SUFFIXES, KeySchema


@dataclass(frozen=True)
class CheckpointKeys:
    """A checkpoint's expert keys: one schema, with some (layer, expert) pairs already in target form."""

    schema: KeySchema
    num_layers: int
    num_experts: int
    suffixes: tuple[str, ...]
    pre_remapped: frozenset[tuple[int, int]]
    produces: KeySchema

    def keys(self) -> list[str]:
        """Every key, each (layer, expert) spelled once: in `schema`, or in `produces` if pre-remapped."""
        raw = self.schema.keys(self.num_layers, self.num_experts, self.suffixes)
        if self.schema.layout == "fused" or not self.pre_remapped:
            return raw
        done = self.produces.keys(self.num_layers, self.num_experts, self.suffixes)
        per_pair = 3 * len(self.suffixes)
        out = []
        for layer in range(self.num_layers):
            for expert in range(self.num_experts):
                start = (layer * self.num_experts + expert) * per_pair
                source = done if (layer, expert) in self.pre_remapped else raw
                out += source[start : start + per_pair]
        return out

    def expected(self) -> list[str]:
        """The names the remap must produce, each exactly once."""
        target = KeySchema(self.produces.prefix, self.produces.block, self.schema.layout, self.produces.names)
        return target.keys(self.num_layers, self.num_experts, self.suffixes)


def key_schemas() -> st.SearchStrategy[KeySchema]:
    """Any schema of the grammar; shrinks toward `model.` / `mlp` / per-expert gate_proj names."""
    return st.builds(
        KeySchema,
        prefix=st.sampled_from(PREFIXES),
        block=st.sampled_from(BLOCKS),
        layout=st.sampled_from(("per_expert", "fused")),
        names=st.sampled_from(("proj", "w")),
    )


@st.composite
def checkpoint_keys(draw: st.DrawFn, accepts: tuple[KeySchema, ...], produces: KeySchema) -> CheckpointKeys:
    """A checkpoint in one of `accepts`, 1–3 layers, 1–8 experts, weight plus optional quantization
    suffixes, with any subset of (layer, expert) already spelled as `produces`. Shrinks toward one layer,
    one expert, `weight` only and nothing pre-remapped."""
    schema = draw(st.sampled_from(accepts))
    num_layers = draw(st.integers(1, 3))
    num_experts = draw(st.integers(1, 8))
    extra = draw(st.lists(st.sampled_from(SUFFIXES[1:]), unique=True, max_size=3))
    suffixes = ("weight", *extra)
    pairs = [(layer, expert) for layer in range(num_layers) for expert in range(num_experts)]
    pre = draw(st.sets(st.sampled_from(pairs))) if schema.layout == "per_expert" else set()
    return CheckpointKeys(schema, num_layers, num_experts, suffixes, frozenset(pre), produces)
