"""No network at run time: a run that discovers every transformers family and loads through from_pretrained
opens no socket, even where the environment does not ask for offline mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.offline import OFFLINE_VARIABLES

ROOT = Path(__file__).resolve().parent.parent

# Every way out of the process is recorded (and refused) before the harness is imported.
NO_SOCKETS = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args[:2])
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from harness.cli import main
code = main(sys.argv[1:])
import huggingface_hub.constants
print("ATTEMPTS", len(attempts), "OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE, "CODE", code)
"""


def test_a_run_opens_no_socket(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", NO_SOCKETS, "run", "--target", "transformers", "--check", "checkpoint-roundtrip",
         "--check", "config-spelling", "--family", "qwen3_moe", "--max-examples", "2", "--quiet",
         "--db", str(tmp_path / "db")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert last.startswith("ATTEMPTS 0 OFFLINE True"), last
