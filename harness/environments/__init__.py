"""Each target in its own Python environment, built with `uv` from a declaration beside the target's code:
`declaration` (what an environment needs, as data), `registry` (which target runs in which), `builder`
(building and reusing them under the cache directory), `launch` (running a target's cases in one),
`targets` (a run's targets that run elsewhere, and their results)."""
