#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool: `bash bench/device_call.sh`, results under $OUT): the gpu step
# as the nightly runs it from an empty Triton cache (timed), the other kernel tests on the GPU, then the kernel
# benchmark (bench/README.md's H200 tables). Installs nothing: the machine's own torch, Triton and pytest.
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
rm -rf ~/.triton/cache
s=$(date +%s); timeout 100 python3 -m pytest -n 4 -q -p no:cacheprovider -p harness.plugin -m gpu --moe-profile gpu tests cases --durations 3 > $OUT/gpu_step.log 2>&1
echo "gpu step -n 4 rc $? in $(( $(date +%s) - s )) s"; tail -5 $OUT/gpu_step.log | cut -c1-150
timeout 60 python3 -m pytest -n 4 -q -p no:cacheprovider -p harness.plugin -m "not gpu" tests/test_triton_kernels.py > $OUT/kernel_tests.log 2>&1
echo "other kernel tests rc $?"; tail -2 $OUT/kernel_tests.log | cut -c1-300
s=$(date +%s); timeout 110 python3 -m bench.kernels --out $OUT/kernels.json > $OUT/bench.log 2>&1; echo "bench rc $? in $(( $(date +%s) - s )) s"
grep -E "^routing|^moe [GQM]" $OUT/bench.log | sed -e 's/, ids equal: True//' -e 's/TFLOP\/s/TF/g' | cut -c1-180
