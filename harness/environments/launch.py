"""Run one target's cases in its own environment: a `moe-harness run --stream FD` process started from that
environment's Python, whose events come back over a pipe of their own and become this run's results.

The protocol is one JSON object a line on file descriptor FD (stdout and stderr are the libraries' and go
to a log): {"plan": N, "targets": [...], "not_offered": [...]} once, {"result": {...}} per case as it ends, {"versions": {...}} last.
Guarantees: every result the other process reported is kept, also when it crashes, hangs up or is
interrupted; a process that ends without its last event is reported as an environment error naming its
exit status and the end of its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from harness.environments.builder import launch_variables, python_of
from harness.environments.declaration import Environment
from harness.outcome import CaseResult


def emit(out: IO[str], **event: Any) -> None:
    """Write one event of the protocol (the side running in the environment)."""
    out.write(json.dumps(event) + "\n")
    out.flush()


@dataclass
class Remote:
    """What the process in the environment reported: its plan, its targets, its results, its versions."""

    env: Environment
    planned: int | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    not_offered: list[list[str]] = field(default_factory=list)  # [spec, check] pairs the run left out there
    versions: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    problem: str = ""  # why it ended without its last event


def run_remote(env: Environment, argv: list[str], remote: Remote,
               on_plan: Callable[[Remote], None] = lambda _: None) -> Iterator[CaseResult]:
    """Each result of `moe-harness run <argv> --stream` run in `env`, as it ends; fills `remote` as events
    arrive. The process is ended when the caller stops early (Ctrl-C)."""
    with tempfile.TemporaryFile("w+") as errors:
        read_end, write_end = os.pipe()
        command = [str(python_of(env)), "-m", "harness.cli", "run", *argv, "--here", "--stream", str(write_end)]
        try:
            process = subprocess.Popen(command, stdout=errors, stderr=errors, text=True, pass_fds=(write_end,),
                                       env=launch_variables(env), stdin=subprocess.DEVNULL)
        except OSError as exc:
            os.close(read_end)
            remote.problem = f"the harness could not start in environment {env.name}: {exc}"
            return
        finally:
            os.close(write_end)  # the pipe ends when the process (and each one it started) has closed it
        events = os.fdopen(read_end)
        try:
            for line in events:
                try:
                    event = json.loads(line)
                except ValueError:  # cut short by the process dying mid-line
                    continue
                if "result" in event:
                    yield CaseResult.from_dict(event["result"])
                elif "plan" in event:
                    remote.planned, remote.targets = event["plan"], event["targets"]
                    remote.not_offered = event.get("not_offered", [])
                    on_plan(remote)
                elif "versions" in event:
                    remote.versions, remote.finished = event["versions"], True
            status = process.wait()
        finally:
            events.close()
            if process.poll() is None:
                process.terminate()
                process.wait()
        if not remote.finished:
            errors.seek(0)
            tail = "\n".join(errors.read().strip().splitlines()[-8:])
            remote.problem = (f"the harness process in environment {env.name} ({python_of(env)}) ended with exit "
                              f"status {status} before reporting every case" + (f":\n{tail}" if tail else ""))
