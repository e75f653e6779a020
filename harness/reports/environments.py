"""`moe-harness env list`: one entry per declared environment: its state, its size, where it is, what it holds."""

from __future__ import annotations

from harness.environments.builder import EnvironmentState


def human_size(size: int) -> str:
    """`size` bytes as a person reads it (one decimal from MB up)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size >> 10} kB"


def render_states(states: list[EnvironmentState]) -> str:
    if not states:
        return "no environments are declared"
    width = max(len(s.env.name) for s in states)
    lines = []
    for s in states:
        built = f"built {s.built} in {s.seconds:.0f} s" if s.built else ""
        next_step = {"missing": f"; `moe-harness env build {s.env.name}` builds it",
                     "stale": f"; its declaration changed: the next run rebuilds it (or `moe-harness env build "
                              f"{s.env.name}`)"}.get(s.status, "")
        lines.append(f"{s.env.name:{width}}  {s.status:7}  {human_size(s.size):>8}  {s.path}")
        lines.append(f"{'':{width}}  {s.env.description}")
        lines.append(f"{'':{width}}  declared in {s.env.source}{'; ' + built if built else ''}{next_step}")
    return "\n".join(lines)
