"""`moe-harness checks` and `moe-harness families` as text: one aligned table each, reasons in full."""

from __future__ import annotations

from harness.catalog import CheckEntry, FamilyEntry


def render_checks(entries: list[CheckEntry]) -> str:
    """Per check: name, the capability it asks for and the families it runs over, then its property."""
    width = max(len(e.name) for e in entries)
    lines = []
    for e in entries:
        lines.append(f"{e.name:<{width}}  capability {e.capability}; families: {e.runs_over}")
        lines.append(f"{'':<{width}}  {e.summary}")
    return "\n".join(lines)


def render_families(entries: list[FamilyEntry], undiscoverable: dict[str, str], heading: str) -> str:
    """A row per family (routing variant, experts, top-k of its tiny config; `*` marks the default set), the
    per-check verdicts under it, then the model types discovery could not see and why."""
    width = max([len(e.name) for e in entries] + [len("family")])
    lines = [heading, f"{'family':<{width}}  {'routing':<22} {'experts':>7} {'top-k':>5}  default"]
    for e in entries:
        if e.unresolved:
            row = f"{e.name:<{width}}  the reference cannot resolve it: {e.unresolved}"
        else:
            row = f"{e.name:<{width}}  {e.routing:<22} {e.experts:>7} {e.top_k:>5}  {'*' if e.default else ''}"
        lines.append(row.rstrip())
        lines += [f"{'':<{width}}    {check}: {verdict}" for check, verdict in e.checks.items()]
    if undiscoverable:
        lines += ["", f"not covered: {len(undiscoverable)} model types whose default config raises when built, so "
                      "whether they have experts is unknown (a finding for their library, not a skip):"]
        lines += [f"  {name}: {why}" for name, why in undiscoverable.items()]
    return "\n".join(lines)
