"""The checkpoint writer of load-parity in a Python process of its own, started once and kept: for an engine whose
import changes transformers' classes in the process (vLLM's Transformers backend decorates every model class it
serves, which transformers then cannot build alone), so that the checkpoint is always transformers' own. Requests are
JSON lines on its stdin; the reply a line on its stdout starting with `REPLY`: nothing, or the skip the writing
raised (reason and kind).
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

from harness.targets.base import DifferentialRun
from harness.verdict import CheckSkipped

REPLY = "REPLY "


class WriterFailed(RuntimeError):
    """The writer process died, or raised something other than a skip."""


class Writer:
    """One writer process, started on first use and again after it died."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def write(self, family: str, seed: int, directory: Path, run_block: bool = False) -> str | None:
        """`write_checkpoint(family, seed, directory)` in the writer process; its skip raised here. `run_block`:
        `differential.write_and_run` instead, whose error (transformers' own) it returns."""
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"family": family, "seed": seed, "directory": str(directory), "run_block": run_block}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        tail: list[str] = []
        for line in self.process.stdout:
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY):])
                if "skip" in reply:
                    raise CheckSkipped.from_reply(reply)
                if "error" in reply:
                    raise WriterFailed(reply["error"])
                return reply.get("transformers_error")
            tail = [*tail[-5:], line.rstrip()]
        raise WriterFailed(f"the checkpoint writer exited {self.process.wait()}: {' / '.join(tail)}")

    def stop(self) -> None:
        """End the writer process."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _serve(requests: IO[str]) -> None:
    from harness.targets.transformers.differential import write_and_run
    from harness.targets.transformers.written import write_checkpoint

    for line in requests:
        request = json.loads(line)
        family, seed, directory = request["family"], request["seed"], Path(request["directory"])
        try:
            reply: dict[str, str] = {}
            if not request.get("run_block"):
                write_checkpoint(family, seed, directory)
            elif (error := write_and_run(family, seed, directory)) is not None:
                reply["transformers_error"] = error
        except CheckSkipped as skipped:
            reply = skipped.to_reply()
        except Exception as exc:  # noqa: BLE001 - the parent reports it
            reply = {"error": f"{type(exc).__name__}: {exc}"[:800]}
        print(REPLY + json.dumps(reply), flush=True)


WRITER = Writer()
atexit.register(WRITER.stop)


def beside_the_writer(family: str, seed: int, x: torch.Tensor,
                      engine: Callable[[Path], torch.Tensor]) -> DifferentialRun:
    """The DifferentialRun of an engine whose import changes transformers' classes in its process: transformers' side
    in the checkpoint writer's process (`write_and_run`), then `engine(directory)`, the engine's block output on x
    from the checkpoint directory it wrote."""
    from safetensors.torch import load_file, save_file

    from harness.targets.transformers.differential import INPUT, RESULT

    root = Path(tempfile.mkdtemp(prefix=f"moe-harness-differential-{family}-"))
    try:
        save_file({"x": x.contiguous()}, root / INPUT)
        error = WRITER.write(family, seed, root / "checkpoint", run_block=True)
        result = load_file(root / RESULT)
        output = engine(root / "checkpoint")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    written = {name.removeprefix("written."): t for name, t in result.items() if name.startswith("written.")}
    return DifferentialRun(output, result.get("output"), error, written)


if __name__ == "__main__":
    _serve(sys.stdin)
