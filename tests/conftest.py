"""Fixtures the harness's own tests share."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli import main
from harness.engine import DEFAULT_SEED

# Target environments the tests build go to a cache of their own, never the user's (tests/test_environments.py).
os.environ["MOE_HARNESS_CACHE"] = tempfile.mkdtemp(prefix="moe-harness-test-cache-")
atexit.register(shutil.rmtree, os.environ["MOE_HARNESS_CACHE"], True)


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., int]:
    """`moe-harness` in this process (a run's cases too, unless the test asks for workers), at the default seed, with the example
    databases in tmp_path (never the committed ones)."""

    def call(*argv: str) -> int:
        command, *rest = argv
        # A test's run repeats (the CLI draws a new seed per run) unless the test passes its own --seed.
        in_process = ["--workers", "0", "--seed", str(DEFAULT_SEED)] if command == "run" else []
        stores = ["--db", str(tmp_path / "local"), "--regressions", str(tmp_path / "shared")]
        return main([command, *in_process, *rest, *(stores if command in ("run", "replay") else [])])

    return call
