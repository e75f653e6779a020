"""Config variants drawn from the config class itself: its declared MoE fields (read by
`harness.targets.config_fields.declared_fields`), each set to another value.

`variant_examples` draws one to MAX_FIELDS of those fields, each with a value of `alternatives`, never its tiny
default: a flipped bool; ints by the field's role (experts 1..MAX_EXPERTS, top-k 1..MAX_TOP_K, shared experts
0..MAX_SHARED, dense-prefix / layer indices 0..layers, periods 1..layers+1, widths half / double the default
up to MAX_WIDTH, others small values up to the default); FLOAT_VALUES; the other string choices; per-layer
patterns over the tiny layer count; and None last where the annotation admits None (the class declares it
accepted). The routing relations (top-k ≤ experts, n_group divides experts, topk_group ≤ n_group, top-k ≤
topk_group · experts / n_group) hold among the values drawn and the defaults: every family's class accepts a
top-k above its expert count and no model can run it, so drawing that would only find the same gap everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.targets.base import ConfigField
from reference.config import N_GROUP_SPELLINGS, NUM_EXPERTS_SPELLINGS, TOP_K_SPELLINGS

# How many fields one example sets.
MAX_FIELDS = 3
# Bounds that keep the tiny model tiny.
MAX_EXPERTS = 16
MAX_TOP_K = 4
MAX_SHARED = 2
MAX_WIDTH = 64
FLOAT_VALUES = (0.0, 1.0, 0.5, 2.5)
# An int field's role, by name: exact spellings for the routing relations, then words; the first match wins.
RELATION_ROLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("top_k", TOP_K_SPELLINGS),
    ("experts", NUM_EXPERTS_SPELLINGS),
    ("n_group", N_GROUP_SPELLINGS),
    ("topk_group", ("topk_group",)),
)
INT_ROLE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shared_count", ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts")),
    ("layer_index", ("first_k", "dense_layers", "start_index", "end_index", "num_sparse", "sparse_layers")),
    ("period", ("step", "freq", "interval", "layer_group")),
    ("width", ("size", "dim")),
)

def relation_role(name: str) -> str | None:
    """The routing relation an int field takes part in (top_k, experts, n_group, topk_group), or None."""
    return next((role for role, names in RELATION_ROLES if name in names), None)


def _int_values(name: str, default: Any, layers: int) -> list[int]:
    """An int field's small values by its role (RELATION_ROLES, then INT_ROLE_WORDS, else near its default)."""
    d = default if isinstance(default, int) and not isinstance(default, bool) else None
    role = relation_role(name) or next((r for r, words in INT_ROLE_WORDS if any(w in name for w in words)), None)
    if role == "top_k":
        return list(range(1, MAX_TOP_K + 1))
    if role in ("experts", "n_group", "topk_group"):
        return list(range(1, MAX_EXPERTS + 1))
    if role == "shared_count":
        return list(range(MAX_SHARED + 1))
    if role == "layer_index":
        return list(range(layers + 1))
    if role == "period":
        return list(range(1, layers + 2))
    if role == "width":
        base = d or 16
        return sorted({v for v in (max(1, base // 2), base, 2 * base) if v <= MAX_WIDTH} or {MAX_WIDTH})
    base = d or 4
    return sorted({1, 2, max(1, base // 2), min(base, MAX_EXPERTS)})


def scalar_values(field: ConfigField) -> list[Any]:
    """A bool, int, float or str field's values other than its tiny default, in shrinking order: the flipped
    bool, ints of its role, FLOAT_VALUES, its other choices; then None when it is optional (and not None)."""
    d = field.default
    values: list[Any] = []
    if field.kind == "bool":
        values = [not d] if d is not None else [False, True]
    elif field.kind == "int":
        values = _int_values(field.name, d, field.layers or 2)
    elif field.kind == "float":
        values = list(FLOAT_VALUES)
    elif field.kind == "str":
        values = list(field.choices)
    values = [v for v in values if v != d or type(v) is not type(d)]
    return values + ([None] if field.optional and d is not None else [])


def alternatives(field: ConfigField) -> st.SearchStrategy[Any] | None:
    """The values other than its tiny default that `field` is drawn with, or None when it has none: its
    `scalar_values`, or for a list kind the per-layer patterns / layer subsets / sizes of `_list_values` (and
    None when optional)."""
    if field.kind in ("bool", "int", "float", "str"):
        values = scalar_values(field)
        return st.sampled_from(values) if values else None
    lists = _list_values(field)
    tail = [None] if field.optional and field.default is not None else []
    if lists is None:
        return st.sampled_from(tail) if tail else None
    other = lists.filter(lambda v: v != field.default)
    return other | st.sampled_from(tail) if tail else other


def _list_values(field: ConfigField) -> st.SearchStrategy[list[Any]] | None:
    """Lists of `field`'s list kind: per-layer patterns of its choices over its layers (when there are two
    choices to mix, or none set), subsets of its layers, or each size of its default list re-drawn."""
    n = field.layers or (len(field.default) if isinstance(field.default, list) else 2)
    if field.kind == "layer_kinds":
        if not field.choices or (len(field.choices) < 2 and field.default is not None):
            return None
        return st.lists(st.sampled_from(field.choices), min_size=n, max_size=n)
    if field.kind == "layer_ids":
        return st.lists(st.sampled_from(range(n)), unique=True, max_size=n).map(sorted)
    if field.kind == "ints" and isinstance(field.default, list) and field.default:
        return st.tuples(*(st.sampled_from(_int_values(field.name, x, 2)) for x in field.default)).map(list)
    return None


def relations_hold(values: dict[str, Any]) -> bool:
    """The routing relations among the ints known by role: top_k ≤ experts, n_group divides experts,
    topk_group ≤ n_group, top_k ≤ topk_group · experts / n_group (any other value leaves its relation open)."""
    def num(role: str) -> int | None:
        v = values.get(role)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    e, k, g, tg = num("experts"), num("top_k"), num("n_group"), num("topk_group")
    if e and k and k > e:
        return False
    if e and g and e % g:
        return False
    if g and tg and tg > g:
        return False
    return not (e and g and tg and k and k > tg * (e // g))


@dataclass(frozen=True)
class VariantExample:
    """The fields set, each with its value (the rest keep the tiny config's)."""

    overrides: tuple[tuple[ConfigField, Any], ...]

    def settings(self) -> tuple[tuple[str, Any], ...]:
        return tuple((f.name, v) for f, v in self.overrides)

    def text(self) -> str:
        return ", ".join(f"{f}={v!r}" for f, v in self.overrides)

    def describe(self) -> dict[str, Any]:
        return {"settings": self.text(), "fields": {str(f): v for f, v in self.overrides},
                "defaults": {str(f): f.default for f, _ in self.overrides}}


def drawable(fields: tuple[ConfigField, ...]) -> tuple[ConfigField, ...]:
    """The fields that have a value other than their default to draw."""
    return tuple(f for f in fields if alternatives(f) is not None)


def _field_and_value(pool: tuple[ConfigField, ...]) -> st.SearchStrategy[tuple[ConfigField, Any]]:
    def with_value(f: ConfigField) -> st.SearchStrategy[tuple[ConfigField, Any]]:
        values = alternatives(f)
        assert values is not None  # `drawable` keeps only fields that have one
        return st.tuples(st.just(f), values)

    return st.sampled_from(pool).flatmap(with_value)


@st.composite
def variant_examples(draw: st.DrawFn, fields: tuple[ConfigField, ...]) -> VariantExample:
    """One to MAX_FIELDS distinct `drawable` fields, each with a value of its `alternatives` (a list of
    (field, value) pairs, so the shrinker drops a field with its value). A relation field (RELATION_ROLES) is
    set only when `relations_hold` with its value, the values set before it and the tiny defaults of the rest,
    so they all hold at the end (an example may then set nothing: the unchanged tiny config). Shrinks toward
    one field (the first declared) and its first alternative."""
    pairs = draw(st.lists(_field_and_value(drawable(fields)), min_size=1, max_size=MAX_FIELDS,
                          unique_by=lambda pair: pair[0]))
    roles = {role: f.default for f in fields if (role := relation_role(f.name))}
    overrides = []
    for f, value in pairs:
        role = relation_role(f.name)
        if role and not relations_hold({**roles, role: value}):
            continue
        if role:
            roles[role] = value
        overrides.append((f, value))
    return VariantExample(tuple(overrides))
