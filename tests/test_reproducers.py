"""A reproducer run by the server ends as `python -c` would end it, in a process of its own."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from harness.reproducers import ReproducerServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReproducerServer]:
    with ReproducerServer(sys.executable, tmp_path_factory.mktemp("cwd"), dict(os.environ), preload=("json",)) as s:
        yield s


@pytest.mark.parametrize(("code", "returncode", "last_stderr"), [
    ("print('fine')", 0, ""),
    ("raise ValueError('the defect')", 1, "ValueError: the defect"),
    ("raise SystemExit(3)", 3, ""),
    ("raise SystemExit('said why')", 1, "said why"),
    ("import sys; sys.exit()", 0, ""),
    ("import os; os._exit(5)", 5, ""),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -15, ""),
])
def test_exit_status_and_output_are_those_of_python_c(server: ReproducerServer, code: str, returncode: int,
                                                       last_stderr: str) -> None:
    outcome = server.run(code, timeout_s=30)
    assert outcome.returncode == returncode, outcome
    assert (outcome.stderr.strip().splitlines() or [""])[-1] == last_stderr
    assert not outcome.timed_out


def test_output_is_captured_and_runs_share_nothing(server: ReproducerServer) -> None:
    first = server.run("import sys; sys.modules['marker'] = 1; X = 1; print('out'); print('err', file=sys.stderr)", 30)
    assert (first.stdout, first.stderr) == ("out\n", "err\n")
    second = server.run("import sys; assert 'marker' not in sys.modules; assert 'X' not in globals()", 30)
    assert second.returncode == 0, second.stderr


def test_a_run_past_its_timeout_is_killed_with_what_it_started(server: ReproducerServer) -> None:
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('started', flush=True); time.sleep(60)")
    outcome = server.run(code, timeout_s=2)
    assert outcome.timed_out and outcome.returncode == -9 and outcome.stdout == "started\n"
    assert server.run("print(1)", 30).stdout == "1\n"  # the server goes on


def test_a_reproducer_reading_its_input_reads_nothing_of_the_servers(server: ReproducerServer) -> None:
    outcome = server.run("import sys; print(repr(sys.stdin.read()))", 30)
    assert outcome.stdout == "''\n" and server.run("print(2)", 30).stdout == "2\n"
