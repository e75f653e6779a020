"""Target `mlx-lm`: mlx-lm 0.32.2, a non-torch engine, driven across a process boundary. Its environment holds no torch
(`environments.toml`, `harness = false`): the target runs in the harness's process and sends JSON requests to a
worker (`worker.py`) running in that environment's Python, which builds mlx-lm's models and reports what they use,
or loads a checkpoint directory the harness wrote and returns the logits.
"""

from __future__ import annotations

import sys

from harness.findings import load_known_failures
from harness.targets.base import ConfigSpellingCap, ModelLoaderCap, Target
from harness.targets.loading import TargetUnavailable


def make_target() -> Target:
    """The mlx-lm Target, its environment built first if needed; TargetUnavailable when it cannot be built or its
    worker does not start."""
    from harness.environments import builder
    from harness.environments.registry import environment_for
    from harness.targets.mlx_lm import models, spellings
    from harness.targets.mlx_lm.client import MlxError, Worker, WorkerFailed
    from harness.tiny_configs import discover_moe_families

    env = environment_for("mlx-lm")
    assert env is not None, "harness/targets/mlx_lm/environments.toml declares it"
    try:
        builder.build(env, say=lambda line: print(line, file=sys.stderr))
        worker = Worker(env)
        hello = worker.request("hello", families=list(discover_moe_families()))
    except (builder.EnvironmentBuildError, MlxError, WorkerFailed) as exc:
        raise TargetUnavailable(f"mlx-lm's environment or worker is not usable here: {exc}") from exc
    probe = spellings.SpellingProbe(worker)
    return Target(
        name="mlx-lm",
        version=hello["versions"]["mlx-lm"],
        description="mlx-lm's models (mlx on the CPU, no torch) as its loader builds them from a config.json, driven "
                    "through a worker in its own environment",
        config_spelling=ConfigSpellingCap(spellings.spellings, probe.used, spellings.FORMS,
                                          skip=spellings.skip_reason),
        model_loader=ModelLoaderCap(models.ModelProbe(worker).run, forms=spellings.FORMS,
                                    example_caps=(("dev", 4), ("ci", 6))),
        families=tuple(hello["families"]),
        known_failures=load_known_failures(__file__, "mlx-lm"),
    )
