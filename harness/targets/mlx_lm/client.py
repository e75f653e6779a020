"""The harness's end of the mlx-lm worker (`worker.py`, run by the mlx-lm environment's Python): one process per
harness process, started on first use, restarted after it dies; JSON requests and replies, one per line."""

from __future__ import annotations

import json
import selectors
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from harness.environments.builder import launch_variables, python_of
from harness.environments.declaration import Environment

WORKER = Path(__file__).with_name("worker.py")
# A request builds a tiny model and runs a few tokens: seconds. Beyond this the worker is taken to hang.
REPLY_TIMEOUT_S = 300


class MlxError(RuntimeError):
    """mlx-lm raised on a request: its exception type, message and the file:line it was raised at."""

    def __init__(self, kind: str, message: str, where: str) -> None:
        super().__init__(f"{kind}: {message} (at {where})")


class WorkerFailed(RuntimeError):
    """The worker died or stopped answering: what happened and the last lines it wrote to stderr."""


class Worker:
    """A worker process in `env`, started on the first request."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def request(self, op: str, **fields: Any) -> Any:
        """The reply's value; MlxError when mlx-lm raised, WorkerFailed when the worker died or hung (it is
        stopped, and the next request starts a new one)."""
        process = self._started()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            self._fail(f"the mlx-lm worker died before taking the {op!r} request")
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(REPLY_TIMEOUT_S):
                self._fail(f"the mlx-lm worker gave no reply to {op!r} in {REPLY_TIMEOUT_S} s; it was stopped")
        line = process.stdout.readline()
        if not line:
            self._fail(f"the mlx-lm worker died while answering {op!r} (exit status {process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            error = reply["error"]
            raise MlxError(error["type"], error["message"], error["where"])
        return reply["value"]

    def close(self) -> None:
        """Stop the worker (a later request starts a new one)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _started(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the worker it logs
            self._process = subprocess.Popen([str(python_of(self.env)), str(WORKER)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=self._log, text=True,
                                             env=launch_variables(self.env))
        return self._process

    def _fail(self, what: str) -> None:
        self.close()
        tail = ""
        if self._log is not None:
            self._log.seek(0)
            tail = "".join(self._log.readlines()[-8:]).strip()
        raise WorkerFailed(what + (f"; its last words:\n{tail}" if tail else ""))
