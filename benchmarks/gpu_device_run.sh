#!/bin/bash
# The one command a session runs on a lent GPU machine (the `device` tool), from the checkout:
#   bash benchmarks/gpu_device_run.sh
# It installs ember, runs the GPU target's tests on the real device (the "ptx" cases that skip
# elsewhere run here) and benchmarks/gpu.py, and leaves every log and figure under $OUT.
set -u
OUT=${OUT:-/tmp/ember-gpu-out}
mkdir -p "$OUT"
export EMBER_CACHE_DIR="$OUT/cache"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -m pip install --no-deps --no-build-isolation -e . > "$OUT/install.txt" 2>&1 || export PYTHONPATH="$PWD"
python3 -c "import ember.runtime.cuda_driver as d; x = d.open_device(); print(x.name, x.compute_capability)" \
    > "$OUT/device.txt" 2>&1
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_ptx_runtime.py tests/test_ptx_target.py \
    > "$OUT/tests.txt" 2>&1
echo "tests: exit $?" >> "$OUT/tests.txt"
timeout 240 python3 benchmarks/gpu.py --json "$OUT/gpu.json" > "$OUT/gpu.txt" 2>&1
echo "benchmark: exit $?" >> "$OUT/gpu.txt"
tail -n 3 "$OUT/tests.txt" "$OUT/gpu.txt"
