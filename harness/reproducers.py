"""Run findings' reproducers, each in a process of its own, forked from a server that imported the heavy libraries once.

A reproducer is standalone Python that shows its defect by raising. Importing torch and transformers takes ~10 s on
CI's cores and vLLM ~30 s, while most reproducers then run in a second or two. The server imports those libraries and
does nothing else; each reproducer runs in a fork of it, so it starts where a fresh interpreter would be after those
imports, sees nothing of any other reproducer, and ends with the exit status and output `python -c` would give.

This file runs as a script in the environment whose Python it is (`python reproducers.py serve MODULE...`), where
the harness itself may not be installed (mlx-lm's): the server part imports the standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Imported by the server before any reproducer, where installed: what most reproducers import first (transformers'
# package is lazy: its modeling_utils is 8 of the 14 s).
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "vllm.config", "vllm.distributed",
           "vllm.model_executor.model_loader.utils", "mlx_lm.utils",
           "torchtitan.experiments.transformers_modeling_backend.state_dict_adapter",
           "sglang.srt.layers.moe.topk", "sglang.srt.server_args", "sglang.srt.configs.model_config",
           "sglang.srt.state_capturer.routed_experts", "sglang.srt.model_loader.loader", "sglang.srt.models.registry")


@dataclass(frozen=True)
class Outcome:
    """What running one reproducer gave: its exit status (non-zero: the defect shows) and its output."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


class ReproducerServer:
    """A server process in one Python; `run` executes one reproducer in a fresh fork of it. Use as a context manager."""

    def __init__(self, python: str, cwd: Path, env: dict[str, str], preload: tuple[str, ...] = PRELOAD) -> None:
        self._process = subprocess.Popen([python, str(Path(__file__).resolve()), "serve", *preload], cwd=cwd, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, code: str, timeout_s: float) -> Outcome:
        """Run `code` as `python -c code` would, killed after `timeout_s` (then `timed_out`)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"code": code, "timeout_s": timeout_s}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the reproducer server ({self._process.args!r}) ended with exit {self._process.wait()}")
        return Outcome(**json.loads(line))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()

    def __enter__(self) -> ReproducerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_child(code: str, out: IO[str], err: IO[str]) -> None:
    """In the fork: run `code` as `__main__` with stdout/stderr to the given files; never returns."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the server's requests are not its input
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.argv = ["-c"]
    status = 0
    try:
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:  # as the interpreter treats it: None is 0, an int is the status, anything else printed
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.05)


def _serve(preload: list[str]) -> None:
    """Read one JSON request a line from stdin, answer one JSON outcome a line on the original stdout."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the imports print must not reach the answers
    for name in preload:
        # Not installed here (or broken): the reproducer that needs it will say so itself.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    for line in sys.stdin:
        request: dict[str, Any] = json.loads(line)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.setpgid(0, 0)  # its own group: a timeout kills what it started too
                _run_child(request["code"], out, err)
            os.setpgid(pid, pid)  # set on both sides: whichever runs first
            returncode, timed_out = _wait(pid, request["timeout_s"])
            out.seek(0)
            err.seek(0)
            answers.write(json.dumps({"returncode": returncode, "stdout": out.read(), "stderr": err.read(),
                                      "timed_out": timed_out}) + "\n")
            answers.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(sys.argv[2:])
