"""A run's targets that run in an environment of their own: which they are, getting each environment ready,
and the results of each, taken from the process started there (environment failures become results too)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from harness.environments.builder import INSIDE, EnvironmentBuildError, build, state
from harness.environments.declaration import Environment
from harness.environments.launch import Remote, run_remote
from harness.outcome import CaseResult
from harness.pseudo_families import NO_FAMILY
from harness.selection import Missing
from harness.verdict import ErrorKind, Status, Verdict


def inside() -> str | None:
    """The environment this process was started in by the harness, if any."""
    return os.environ.get(INSIDE)


def elsewhere(specs: list[str], here: bool) -> dict[str, Environment]:
    """The specs that run in an environment other than this process's, with that environment (none with `here`);
    an environment the harness does not run in (`harness = false`) is its target's worker's, not a place to run it."""
    from harness.environments.registry import environment_for

    if here:
        return {}
    found = {spec: environment_for(spec) for spec in specs}
    return {spec: env for spec, env in found.items() if env is not None and env.harness and env.name != inside()}


def prepare(spec: str, env: Environment, may_build: bool, say: Callable[[str], None]) -> Missing | None:
    """None when `env` is ready (built now if it had to be and may be); else why `spec` cannot run."""
    if not may_build and state(env).status != "built":
        return Missing(spec, f"its environment {env.name} is {state(env).status} and --no-build was given; "
                             f"build it with `moe-harness env build {env.name}`", error=False, environment=True)
    try:
        build(env, say=say)
    except EnvironmentBuildError as exc:
        return Missing(spec, str(exc), error=True, environment=True)
    return None


def blame_environment(missing: Missing) -> Missing:
    """`missing` as its environment's fault when this process runs in the environment declared for that target
    (built to provide it); unchanged otherwise (another target, or one whose own code raised)."""
    from harness.environments.registry import environment_for

    declared = environment_for(missing.spec) if inside() and not missing.error else None
    if declared is None or declared.name != inside():
        return missing
    return Missing(missing.spec, f"{missing.reason} (in its own environment {inside()}, which was built to provide "
                                 f"it: rebuild it with `moe-harness env build {inside()} --force`)",
                   error=True, environment=True)


def remote_results(spec: str, env: Environment, argv: list[str], checks: list[str], remote: Remote,
                   on_plan: Callable[[Remote], None]) -> Iterator[CaseResult]:
    """Every result of `spec`'s cases run in `env`; if that process ends early, an environment error for each
    check it reported nothing for (at least one), saying how it ended."""
    seen: list[str] = []
    for result in run_remote(env, argv, remote, on_plan):
        seen.append(result.verdict.check)
        yield result
    if remote.problem:
        unreported = [c for c in checks if c not in seen] or seen[-1:] or checks[:1]
        for check in unreported:
            yield CaseResult(Verdict(check, spec, NO_FAMILY, Status.ERROR, ErrorKind.ENVIRONMENT_ERROR,
                                     remote.problem), spec=spec)
