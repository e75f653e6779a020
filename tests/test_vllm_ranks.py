"""The rank pool reads each rank's reply however its output arrives. No vLLM needed: the pool starts its rank
processes as it always does, running a module that only prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.targets.vllm import ranks

# A log line, a progress bar's unfinished line and the reply in one write, then alive (as a rank waits for its next
# request): a reader that takes lines from a buffer leaves the reply there, where the selector never reports it.
ONE_WRITE = """import sys, time
sys.stdout.write('INFO loaded\\nLoading shards: 0%\\rLoading shards: 100%\\nhalf a line\\r'
                 'REPLY {"skip": "why", "kind": "not-applicable"}\\n')
sys.stdout.flush()
time.sleep(60)
"""
DIES = "print('about to fail', flush=True)\nraise SystemExit(3)\n"


def _pool_running(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ranks.RankPool:
    (tmp_path / "fake_rank.py").write_text(source)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(ranks, "RANK_MODULE", "fake_rank")
    monkeypatch.setattr(ranks, "REPLY_TIMEOUT_S", 20)
    pool = ranks.RankPool()
    pool._start()
    return pool


def test_replies_written_with_other_output_in_one_chunk_are_read(tmp_path: Path, monkeypatch) -> None:
    pool = _pool_running(ONE_WRITE, tmp_path, monkeypatch)
    try:
        assert pool._replies() == [{"skip": "why", "kind": "not-applicable"}] * ranks.WORLD
    finally:
        pool.stop()


def test_a_rank_that_dies_fails_the_load_with_its_last_output(tmp_path: Path, monkeypatch) -> None:
    pool = _pool_running(DIES, tmp_path, monkeypatch)
    with pytest.raises(ranks.ShardedLoadFailed, match=r"rank \d exited 3; last output: rank \d: about to fail"):
        pool._replies()
