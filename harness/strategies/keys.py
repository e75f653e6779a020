"""Checkpoint key schemas (NOTES §5) and whole checkpoints' key sets drawn from them.

The region is a real checkpoint's: expert counts with weight on the sizes released models have (up to 384), layers
enough for two-digit indices, the shared expert in either spelling and the non-expert tensors that sit beside the
experts (router, its selection bias, norms, attention, a dense layer's MLP), which a remap must leave alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from harness.strategies.sizes import REAL_EXPERT_COUNTS
from reference.checkpoint import BLOCKS, NEIGHBOUR_KINDS, PREFIXES, SHARED_SPELLINGS, SUFFIXES, KeySchema

SMALL_EXPERTS = 8
# Bounds on what one example writes: layers × experts stays within this (so E = 384 draws one layer), and the
# layer count within MAX_LAYERS (enough for two-digit layer indices when the expert count is small).
LAYER_EXPERT_BUDGET = 128
MAX_LAYERS = 12


def expert_counts(small: int = SMALL_EXPERTS, least: int = 2) -> st.SearchStrategy[int]:
    """`least`..`small` half the time (fast examples, and what shrinking ends at), a released model's count the
    other half (weighted toward 8–384 as real checkpoints have them); shrinks toward `least`. Two by default: a
    single expert is no mixture (jamba builds a dense MLP for one)."""
    return st.integers(least, small) | st.sampled_from(REAL_EXPERT_COUNTS)


def layer_counts(num_experts: int, max_layers: int = MAX_LAYERS, min_layers: int = 1) -> st.SearchStrategy[int]:
    """min_layers..max_layers layers, bounded so that layers × experts stays within LAYER_EXPERT_BUDGET (at least
    `min_layers`: a family whose first layers are dense needs them to have a MoE layer at all)."""
    return st.integers(min_layers, max(min_layers, min(max_layers, LAYER_EXPERT_BUDGET // num_experts)))


@dataclass(frozen=True)
class CheckpointKeys:
    """A checkpoint's keys: the experts in one schema, with some (layer, expert) pairs already in target form,
    and the non-expert keys beside them (`others`, in the schema's prefix and block), which map to themselves.

    `keys()` and `expected()` hold the others too when `with_others` is set (`checkpoint_keys(...,
    with_others=True)`); `all_keys()` and `all_expected()` always do, `expert_keys()` never.
    """

    schema: KeySchema
    num_layers: int
    num_experts: int
    suffixes: tuple[str, ...]
    pre_remapped: frozenset[tuple[int, int]]
    produces: KeySchema
    others: tuple[str, ...] = ()
    with_others: bool = False

    def expert_keys(self) -> list[str]:
        """Every expert key, each (layer, expert) spelled once: in `schema`, or in `produces` if pre-remapped."""
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

    def keys(self) -> list[str]:
        """The expert keys, then (`with_others`) the others."""
        return self.all_keys() if self.with_others else self.expert_keys()

    def expected(self) -> list[str]:
        """The names the remap must produce for `keys()`, each exactly once (the other keys as they are)."""
        return self.all_expected() if self.with_others else self.expected_experts()

    def all_keys(self) -> list[str]:
        """Every key of the checkpoint: the expert keys, then the others."""
        return [*self.expert_keys(), *self.others]

    def expected_experts(self) -> list[str]:
        """The names the remap must produce for the expert keys."""
        target = KeySchema(self.produces.prefix, self.produces.block, self.schema.layout, self.produces.names)
        return target.keys(self.num_layers, self.num_experts, self.suffixes)

    def all_expected(self) -> list[str]:
        """The names the remap must produce for every key (the other keys as they are)."""
        return [*self.expected_experts(), *self.others]


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
def checkpoint_keys(draw: st.DrawFn, accepts: tuple[KeySchema, ...], produces: KeySchema,
                    experts: st.SearchStrategy[int] | None = None, max_layers: int = MAX_LAYERS,
                    shared: tuple[str, ...] = ("", *SHARED_SPELLINGS),
                    neighbours: tuple[str, ...] = NEIGHBOUR_KINDS, with_others: bool = False) -> CheckpointKeys:
    """A checkpoint in one of `accepts`: `experts` routed experts (default `expert_counts()`), 1–`max_layers`
    layers within the layer × expert budget, weight plus optional quantization suffixes, any subset of (layer,
    expert) already spelled as `produces`, a shared expert spelled one of `shared` ("" none) and any of the
    `neighbours` kinds of non-expert keys (in `keys()` with `with_others`; always in `all_keys()`). Shrinks
    toward one layer, the fewest experts, `weight` only, nothing pre-remapped, no shared expert, no other keys."""
    schema = draw(st.sampled_from(accepts))
    num_experts = draw(experts if experts is not None else expert_counts())
    num_layers = draw(layer_counts(num_experts, max_layers))
    extra = draw(st.lists(st.sampled_from(SUFFIXES[1:]), unique=True, max_size=3))
    suffixes = ("weight", *extra)
    pairs = [(layer, expert) for layer in range(num_layers) for expert in range(num_experts)]
    pre = draw(st.sets(st.sampled_from(pairs))) if schema.layout == "per_expert" else set()
    spelled = draw(st.sampled_from(shared))
    kinds = tuple(k for k in neighbours if draw(st.booleans()))
    others = [key for layer in range(num_layers) for key in schema.neighbour_keys(layer, True, spelled, kinds).values()]
    others += schema.neighbour_keys(-1, False, "", kinds).values()
    return CheckpointKeys(schema, num_layers, num_experts, suffixes, frozenset(pre), produces, tuple(others),
                          with_others)
