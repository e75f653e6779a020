"""The text `moe-harness inspect` prints: what the checkpoint holds, its problems grouped by kind (each naming its
layer, expert and key; long lists cut short with counts), notes, and one closing summary line."""

from __future__ import annotations

from collections import Counter

from harness.inspection import KINDS, Inspection, Problem, format_ranges

# Lines shown per problem kind; the rest are counted, per layer.
CAP = 12
TITLES = {
    "files": "files the loader cannot read",
    "shards": "shards disagreeing with the index",
    "mis-shaped": "mis-shaped against the config",
    "dtype": "dtype unlike the other expert tensors of its kind",
    "conflicting": "conflicting: one parameter claimed by two layouts or spellings",
    "missing": "missing: expert slots no key fills",
    "unexpected": "unexpected: expert keys no slot takes",
    "loader": "refused by the reference loader",
}
# Suffixes that hold plain values; any other suffix seen is a quantization format's.
_PLAIN = ("weight", "bias")


def render(result: Inspection) -> str:
    """The whole report; its last line is `summary_line(result)`."""
    lines = [f"moe-harness inspect {result.directory}", *_facts(result)]
    for kind in KINDS:
        problems = [p for p in result.problems if p.kind == kind]
        if problems:
            lines += ["", *_section(kind, problems)]
    if result.notes:
        lines += ["", "notes:", *(f"  - {note}" for note in result.notes)]
    return "\n".join([*lines, "", summary_line(result)])


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} ×{n}" for name, n in counter.most_common()) or "none"


def _facts(result: Inspection) -> list[str]:
    """Aligned `name  value` lines: family, what the config resolves to, files, layouts, dtypes, quantization."""
    rows: list[tuple[str, str]] = []
    if result.family:
        rows.append(("family", f"{result.family} ({result.family_source})"))
    spec = result.spec
    if spec is not None:
        rows.append(("config", f"{spec.num_experts} routed experts ({spec.spellings.get('num_experts')}), top-k "
                     f"{spec.top_k}, hidden {spec.hidden_size}, expert width {spec.intermediate_size}; MoE layers "
                     f"{format_ranges(spec.moe_layers)} of {spec.num_layers}"))
    if result.shards:
        named = " named by the index" if result.indexed else ""
        rows.append(("files", f"{len(result.shards)} safetensors file(s){named}; {len(result.tensors)} tensors read, "
                     f"{sum(result.layouts.values())} of them experts'"))
    if result.layouts:
        usual = result.usual_layout
        said = "" if usual is None else (" (the family's released layout)" if set(result.layouts) == {usual}
                                         else f" (the family's released checkpoints use {usual.id})")
        rows.append(("layout", _counts(Counter({s.id: n for s, n in result.layouts.items()})) + said))
    if result.dtypes or result.other_dtypes:
        rows.append(("dtypes", f"experts {_counts(result.dtypes)}; other tensors {_counts(result.other_dtypes)}"))
    quant = Counter({s: n for s, n in result.suffixes.items() if s not in _PLAIN})
    if quant or result.quantization:
        rows.append(("quantization", f"suffixes {_counts(quant)}; config.json quantization_config: "
                     f"{result.quantization or 'none'}"))
    width = max((len(name) for name, _ in rows), default=0)
    return [f"{name:<{width}}  {value}" for name, value in rows]


def _where(problem: Problem) -> str:
    if problem.layer is None:
        return ""
    return f"layer {problem.layer}" + ("" if problem.expert is None else f" expert {problem.expert}")


def _section(kind: str, problems: list[Problem]) -> list[str]:
    """The kind's title and count, one line per problem in layer and expert order (at most CAP), then the rest
    counted per layer."""
    ordered = sorted(problems, key=lambda p: (-1 if p.layer is None else p.layer,
                                              -1 if p.expert is None else p.expert, p.key))
    width = max(len(_where(p)) for p in ordered[:CAP])
    lines = [f"{TITLES[kind]} ({len(problems)}):"]
    lines += [f"  {_where(p):<{width}}{'  ' if width else ''}{p.key}: {p.detail}" for p in ordered[:CAP]]
    rest = ordered[CAP:]
    if rest:
        per_layer = Counter("no layer" if p.layer is None else f"layer {p.layer}" for p in rest)
        lines.append(f"  ... and {len(rest)} more ({_counts(per_layer)})")
    return lines


def summary_line(result: Inspection) -> str:
    """One line: clean (with what was checked), or the problem count per kind."""
    family = f" as {result.family}" if result.family else ""
    if result.clean:
        spec = result.spec
        scope = "" if spec is None else (f": {spec.num_experts} experts × {len(spec.moe_layers)} MoE layers, "
                                         f"{sum(result.layouts.values())} expert tensors in "
                                         f"{len(result.shards)} file(s)")
        return f"inspect: OK, {result.directory} loads cleanly{family}{scope}"
    kinds = Counter(p.kind for p in result.problems)
    listed = ", ".join(f"{k} ×{kinds[k]}" for k in KINDS if kinds[k])
    return (f"inspect: {len(result.problems)} problem(s) in {result.directory}{family} ({listed}): it does not load "
            "cleanly")
