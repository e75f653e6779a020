"""Sharded loading over `WORLD` rank processes started once and kept: each joins one gloo group (vLLM's distributed
environment and model parallel groups of size `WORLD`), then loads every directory it is sent as vLLM serves it under
the sharding named (tensor parallel, or expert parallel over the same ranks), writing what it holds to a folder the
parent reads (the rank process runs `models.py`, which hands `serve` vLLM's loading). A request is a JSON line on the
rank's stdin; the reply a line on its stdout, from `REPLY` on (after any unfinished line a progress bar left).

A rank that raises replies with vLLM's error (the target's error); one that dies or goes silent fails the load with
its last output lines and the pool is started again on the next load.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

from harness.targets.base import LoadedParams
from harness.targets.loaded import error_reply, read, write
from harness.verdict import CheckSkipped

WORLD = 2
REPLY = "REPLY "
# The module a rank process runs (`python -m RANK_MODULE RANK RENDEZVOUS`): it calls `serve` with vLLM's loading.
RANK_MODULE = "harness.targets.vllm.models"
LOCK = Path.home() / ".cache" / "moe-harness" / "vllm-ranks.lock"
# How long one load may take on every rank (the first one imports vLLM and joins the group).
REPLY_TIMEOUT_S = 300


class ShardedLoadFailed(RuntimeError):
    """A rank raised while loading (vLLM's error, quoted), or died or went silent."""


class RankPool:
    """`WORLD` rank processes of one gloo group, started on first use."""

    def __init__(self) -> None:
        self.ranks: list[subprocess.Popen[bytes]] = []
        self.tails: list[deque[str]] = []
        self.folder: tempfile.TemporaryDirectory[str] | None = None

    def load(self, directory: Path, sharding: str) -> tuple[LoadedParams, ...]:
        """What each rank holds of `directory` under `sharding` after vLLM's weight loading. One sharded load at a
        time on the machine (a file lock): two pools loading at once (two harness workers) were seen to hang."""
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        with LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._load(directory, sharding)

    def _load(self, directory: Path, sharding: str) -> tuple[LoadedParams, ...]:
        if not self.ranks or any(r.poll() is not None for r in self.ranks):
            self._start()
        assert self.folder is not None
        out = Path(tempfile.mkdtemp(dir=self.folder.name))
        request = json.dumps({"directory": str(directory), "sharding": sharding, "out": str(out)}) + "\n"
        for rank in self.ranks:
            assert rank.stdin is not None
            rank.stdin.write(request.encode())
            rank.stdin.flush()
        replies = self._replies()
        if any(reply for reply in replies):
            # A rank that raised may have left the other inside a collective it never joined: start afresh.
            self.stop()
        skips = [r for r in replies if "skip" in r]
        if skips:
            raise CheckSkipped.from_reply(skips[0])
        errors = [f"rank {i}: {r['error']}" for i, r in enumerate(replies) if "error" in r]
        if errors:
            raise ShardedLoadFailed("; ".join(errors))
        return tuple(read(out, rank) for rank in range(WORLD))

    def _start(self) -> None:
        self.stop()
        self.folder = tempfile.TemporaryDirectory(prefix="moe-harness-vllm-ranks-")
        rendezvous = Path(self.folder.name) / "rendezvous"
        # Bytes, read as they come (`_replies`): a buffered readline would keep a REPLY that arrived with the line
        # before it in its buffer, where the selector never reports it again.
        self.ranks = [subprocess.Popen([sys.executable, "-m", RANK_MODULE, str(rank), str(rendezvous)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       bufsize=0) for rank in range(WORLD)]
        self.tails = [deque(maxlen=8) for _ in range(WORLD)]

    def _replies(self) -> list[dict[str, str]]:
        selector = selectors.DefaultSelector()
        for i, rank in enumerate(self.ranks):
            assert rank.stdout is not None
            selector.register(rank.stdout, selectors.EVENT_READ, i)
        replies: dict[int, dict[str, str]] = {}
        partial = [b""] * WORLD  # each rank's output since its last newline (a progress bar's line in the making)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while len(replies) < WORLD:
            ready = selector.select(timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                self._fail(f"no reply within {REPLY_TIMEOUT_S} s")
            for event, _ in ready:
                i = event.data
                chunk = os.read(event.fd, 1 << 16)
                if not chunk:
                    selector.unregister(event.fileobj)
                    self._fail(f"rank {i} exited {self.ranks[i].wait()}")
                *lines, partial[i] = (partial[i] + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if REPLY in line:  # also after a progress bar's unfinished line
                        replies[i] = json.loads(line[line.index(REPLY) + len(REPLY):])
                    else:
                        self.tails[i].append(line.rsplit("\r", 1)[-1].rstrip())
        selector.close()
        return [replies[i] for i in range(WORLD)]

    def _fail(self, what: str) -> None:
        tails = " | ".join(f"rank {i}: " + " / ".join(t) for i, t in enumerate(self.tails) if t)
        self.stop()
        raise ShardedLoadFailed(f"{what}; last output: {tails or '(none)'}")

    def stop(self) -> None:
        """End the rank processes and remove their folder."""
        for rank in self.ranks:
            rank.kill()
            rank.wait()
        self.ranks = []
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


def serve(rank: int, rendezvous: Path, requests: IO[str], load: Callable[[Path, str, int], LoadedParams]) -> None:
    """Join the group, then answer load requests until stdin closes: `load(directory, sharding, rank)` is vLLM's
    loading on this rank (its skips replied as skips)."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=WORLD, rank=rank, distributed_init_method=f"file://{rendezvous}",
                                     local_rank=rank, backend="gloo")
        initialize_model_parallel(WORLD, 1)
    for line in requests:
        request = json.loads(line)
        out = Path(request["out"])
        try:
            loaded = load(Path(request["directory"]), request["sharding"], rank)
            write(loaded, out, rank)
            reply = {}
        except CheckSkipped as skipped:
            reply = skipped.to_reply()
        except Exception as exc:  # noqa: BLE001 - vLLM's error is the reply
            reply = error_reply(exc)
        print(REPLY + json.dumps(reply), flush=True)


POOL = RankPool()
atexit.register(POOL.stop)
