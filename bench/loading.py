"""Loading memory benchmark (a script, not a test): peak RSS of the reference loader on a ~2 GB checkpoint.

    .venv/bin/python -m bench.loading [--gb 2] [--dir /tmp]

For each layout (per-expert legacy keys, fused keys) it writes a sharded checkpoint of about `--gb` GB,
then streams it with `reference.loader.plan_checkpoint(...).stream()` in a fresh process, dropping each
parameter once assembled (as a loader copying onto a device would). Peak RSS is the process's
`ru_maxrss` after loading minus the same after its imports. Goal: peak <= 1.5 x the largest parameter
+ 300 MB. The files are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1 << 20

# Runs in the fresh process: measures the loader alone, not the writer or this script.
_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from reference.config import resolve_moe_spec
from reference.loader import plan_checkpoint
directory = Path(sys.argv[1])
spec = resolve_moe_spec(json.loads((directory / "config.json").read_text()))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
largest = total = 0
for name, tensor in plan_checkpoint(directory, spec).stream():
    largest, total = max(largest, tensor.nbytes), total + tensor.nbytes
    del tensor
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"peak": peak * 1024, "largest": largest, "total": total,
                  "seconds": time.perf_counter() - start}))
"""


def bench_plan(layout: str, gigabytes: float):  # type: ignore[no-untyped-def]
    """A qwen3_moe plan of about `gigabytes` GB of float32 expert weights in 4 shards."""
    from harness.strategies.checkpoint_files import CheckpointPlan
    from reference.checkpoint import KeySchema

    # Qwen3-30B-like expert shapes: hidden 2048, expert width 768; each layer's experts hold 12·E·H·I bytes.
    hidden, width, experts = 2048, 768, 32
    layers = max(1, round(gigabytes * (1 << 30) / (12 * experts * hidden * width)))
    schema = KeySchema("model.", "mlp", layout, "proj")
    return CheckpointPlan(family="qwen3_moe", schema=schema, num_layers=layers, num_experts=experts,
                          hidden=hidden, intermediate=width, shards=4)


def _write(layout: str, gigabytes: float, root: Path) -> Path:
    """Write the checkpoint in a child process, so its memory is gone before the measurement."""
    directory = Path(tempfile.mkdtemp(prefix=f"moe-harness-bench-{layout}-", dir=root))
    code = ("import sys; from bench.loading import bench_plan; "
            "from harness.strategies.checkpoint_files import write_checkpoint; "
            "write_checkpoint(bench_plan(sys.argv[1], float(sys.argv[2])), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, layout, str(gigabytes), str(directory)], check=True)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    print(f"command: {os.path.relpath(sys.executable)} -m bench.loading --gb {args.gb:g} --dir {args.dir}")
    print("| layout | shards | checkpoint | largest parameter | peak RSS over baseline | bound 1.5x+300 MB "
          "| within | load s |")
    print("|---|---|---|---|---|---|---|---|")
    for layout in ("per_expert", "fused"):
        start = time.perf_counter()
        directory = _write(layout, args.gb, args.dir)
        try:
            files = sorted(directory.glob("*.safetensors"))
            size = sum(f.stat().st_size for f in files)
            out = subprocess.run([sys.executable, "-c", _MEASURE, str(directory)], check=True,
                                 capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        bound = 1.5 * result["largest"] + 300 * MB
        print(f"| {layout} | {len(files)} | {size / MB:,.0f} MB | {result['largest'] / MB:,.0f} MB | "
              f"{result['peak'] / MB:,.0f} MB | {bound / MB:,.0f} MB | {'yes' if result['peak'] <= bound else 'NO'} | "
              f"{result['seconds']:.1f} |", flush=True)
        print(f"  (writing took {time.perf_counter() - start - result['seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
