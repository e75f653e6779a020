#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool; results under $OUT). Installs nothing: the machine's own torch,
# Triton, transformers and pytest.
#   bash bench/device_call.sh            the gpu step as the nightly runs it from an empty Triton cache (timed), the
#                                        other kernel tests on the GPU, then the kernel benchmark (bench/README.md)
#   bash bench/device_call.sh nightly    scripts/nightly.sh's gpu and nightly steps from an empty Triton cache, timed
#   bash bench/device_call.sh cases      the gpu step (timed, empty cache), the benchmark, then the nightly step with
#                                        each case's end time-stamped, within CASES_LIMIT seconds (default 520)
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
rm -rf ~/.triton/cache
timed() {  # timed LIMIT LOG CMD...: runs CMD under a time limit into $OUT/LOG, then says how it ended and how long it took
    local limit=$1 log=$2 s; shift 2; s=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$log" 2>&1
    echo "$log: rc $? in $(( $(date +%s) - s )) s"
}
gpu_step() {  # the gpu step as scripts/nightly.sh runs it, timed
    timed 100 gpu_step.log python3 -m pytest -n 4 -q -p no:cacheprovider -p harness.plugin -m gpu --moe-profile gpu \
        tests cases --durations 5
    tail -7 "$OUT/gpu_step.log" | cut -c1-150
}
case "${1:-kernels}" in
nightly)
    NIGHTLY_TARGETS="" timed 570 nightly.log bash scripts/nightly.sh "$OUT/nightly"
    grep -E "passed|failed|error|nightly:" "$OUT/nightly.log" | cut -c1-200 | tail -12;;
cases)
    gpu_step
    timed 60 bench.log python3 -m bench.kernels --out "$OUT/kernels.json"
    grep -E "^routing" "$OUT/bench.log" | sed -e 's/, ids equal: True//' | cut -c1-180
    timed "${CASES_LIMIT:-520}" cases.log bash -c 'python3 -m pytest -p no:cacheprovider -p harness.plugin -v \
        --durations 30 --tx "16*popen//env:CUDA_VISIBLE_DEVICES=0//env:OMP_NUM_THREADS=1" --dist load cases \
        --moe-profile nightly --moe-regressions "$OUT/regressions" 2>&1 |
        while IFS= read -r line; do echo "$(date +%s) $line"; done'
    grep -E "[0-9.]+s call|passed|failed" "$OUT/cases.log" | head -12 | cut -c1-160;;
*)
    gpu_step
    timed 60 kernel_tests.log python3 -m pytest -n 4 -q -p no:cacheprovider -p harness.plugin -m "not gpu" \
        tests/test_triton_kernels.py
    tail -2 "$OUT/kernel_tests.log" | cut -c1-300
    timed 110 bench.log python3 -m bench.kernels --out "$OUT/kernels.json"
    grep -E "^routing|^moe [GQM]" "$OUT/bench.log" | sed -e 's/, ids equal: True//' -e 's/TFLOP\/s/TF/g' | cut -c1-180;;
esac
