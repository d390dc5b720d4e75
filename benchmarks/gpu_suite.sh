#!/usr/bin/env bash
# One run on a lent GPU (H100/H200), under 7 minutes: environment, real-GPU tests, kernel benchmarks,
# SSD300-VGG16 training / inference throughput, end-to-end inference (JPEG files -> detections, torch runtime
# vs torchvision, batch 1 and 32, NMS included). Usage:
#
#   benchmarks/gpu_suite.sh [OUTDIR]      # default: $OUT, else benchmarks/results/gpu-<UTC date>
#
# Writes 8 flat files into OUTDIR (the most a device call brings back: add none without removing one): env.txt,
# tests_gpu.log, bench.log (the three benchmark stages' output, one after the other), kernels_cuda.json,
# gpu_train_cuda.json, inference_cuda.json, goals.json (the issue's speed goals: met / MISSED / not measured) and
# summary.txt. The package need not be installed: PYTHONPATH is set to the repository root and plain `python3` is
# used (override with PYTHON=...). Every stage runs under `timeout`, so a hang costs at most that stage's limit (sum
# of limits: 20 + 120 + 90 + 120 + 90 = 440 s worst case; the expected total is 3-5 minutes). Exit status: non-zero
# when the GPU tests failed (or timed out).
# Without CUDA the GPU tests skip with their reason and the benchmark stages are skipped; SUITE_CPU_SMOKE=1
# runs tiny CPU versions of them instead (to check this script's flow on a machine without a GPU).
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUTDIR="${1:-${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
SUMMARY="$OUTDIR/summary.txt"
: > "$SUMMARY"
for log in env.txt tests_gpu.log bench.log; do : > "$OUTDIR/$log"; done  # stages append: start empty

note() { echo "$*" | tee -a "$SUMMARY"; }

# stage NAME LIMIT_S LOGFILE CMD...: run CMD under `timeout`, append its output to LOGFILE under a header (stages
# share bench.log: the file count is capped), record rc and duration.
stage() {
    local name="$1" limit="$2" log="$3"
    shift 3
    local t0=$SECONDS
    echo "=== stage $name: $*" >> "$OUTDIR/$log"
    timeout -k 10 "$limit" "$@" >> "$OUTDIR/$log" 2>&1
    local rc=$?
    local verdict="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then verdict="TIMED OUT after ${limit}s"; elif [ "$rc" -ne 0 ]; then verdict="FAILED (rc=$rc)"; fi
    note "stage $name: $verdict in $((SECONDS - t0))s -> $log"
    return "$rc"
}

note "gpu_suite $(date -u +%Y-%m-%dT%H:%M:%SZ) repo=$REPO commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"

# 1. environment: GPU, library versions, and whether numba can compile for the device (NVVM found).
stage env 20 env.txt bash -c '
    nvidia-smi || echo "nvidia-smi not available"
    "$1" - <<EOF
import platform, sys
import kernels  # first: applies the NumPy >= 2.5 shim that numba-cuda 0.30 needs (kernels/_compat.py)
import numpy, torch, torchvision, numba
print("python", platform.python_version(), sys.executable)
print("numpy", numpy.__version__, "torch", torch.__version__, "cuda", torch.version.cuda,
      "torchvision", torchvision.__version__, "numba", numba.__version__)
try:
    import numba_cuda
    print("numba-cuda", getattr(numba_cuda, "__version__", "?"))
except ImportError:
    print("numba-cuda not installed (numba built-in CUDA target)")
print("torch.cuda.is_available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
from numba import cuda
print("numba.cuda.is_available", cuda.is_available())
if cuda.is_available():
    from numba.cuda.cuda_paths import get_cuda_paths
    for key, value in get_cuda_paths().items():
        print("numba cuda path", key, value)
    from kernels.nms import nms_kernel  # compiles on first launch: do one tiny launch now
    import numpy as np
    keep = cuda.to_device(np.zeros((1, 1, 2), np.uint8))
    nms_kernel[1, 32](cuda.to_device(np.asarray([[[[0, 0, 1, 1], [0, 0, 1, 1]]]], np.float32)),
                      cuda.to_device(np.asarray([[2]], np.int64)), np.float32(0.45), keep)
    print("numba CUDA compile + launch ok, keep =", keep.copy_to_host().tolist())
EOF
' env-stage "$PY"

HAS_CUDA=$("$PY" -c "from kernels.interop import cuda_available; print(int(cuda_available()))" 2>/dev/null || echo 0)
note "CUDA usable by torch and numba: $HAS_CUDA"

# 2. the GPU tests: the "cuda" parameter of every kernel test (kernel_cases.cpu_and_cuda) and the GPU-only ones
#    (tests/kernels/test_kernels_cuda.py); they skip with their reason when there is no GPU.
stage tests 120 tests_gpu.log "$PY" -m pytest -m gpu tests/kernels -q -rs -p no:cacheprovider
TEST_RC=$?
tail -n 3 "$OUTDIR/tests_gpu.log" | sed 's/^/  tests: /' | tee -a "$SUMMARY"

# 3. kernel benchmarks, 4. training / inference throughput on synthetic on-device batches and 5. end-to-end
#    inference from JPEG files (benchmarks.bench_inference: decode, resize, network, NMS; the torch runtime,
#    channels_last and contiguous, vs torchvision ssd300_vgg16 with the same weights; batch 1 and 32).
if [ "$HAS_CUDA" = "1" ]; then
    stage bench_kernels 90 bench.log "$PY" -m benchmarks.bench_kernels --device cuda --out "$OUTDIR"
    stage bench_gpu_train 120 bench.log "$PY" -m benchmarks.bench_gpu_train --device cuda \
        --preset ssd300_vgg16 --batch 64 --out "$OUTDIR"
    stage bench_inference 90 bench.log "$PY" -m benchmarks.bench_inference --device cuda --batches 1,32 \
        --out "$OUTDIR"
elif [ "${SUITE_CPU_SMOKE:-0}" = "1" ]; then
    stage bench_kernels 300 bench.log "$PY" -m benchmarks.bench_kernels --device cpu --quick \
        --repeats 1 --sections matcher --out "$OUTDIR"
    stage bench_gpu_train 300 bench.log "$PY" -m benchmarks.bench_gpu_train --device cpu \
        --preset ssd300_slim --batch 2 --warmup 1 --steps 1 --windows 1 --train-settings fp32:numba \
        --inference-settings fp32:numba --out "$OUTDIR"
    stage bench_inference 300 bench.log "$PY" -m benchmarks.bench_inference --device cpu --runtimes torch \
        --batches 1 --repeats 1 --images 1 --calibration-images 1 --out "$OUTDIR"
else
    note "no CUDA: benchmark stages skipped (SUITE_CPU_SMOKE=1 runs tiny CPU versions)"
fi

# 5. the issue's speed goals, read back from the JSON above (met / MISSED / not measured; never fails the suite).
GOALS_DEVICE=cpu
if [ "$HAS_CUDA" = "1" ]; then GOALS_DEVICE=cuda; fi
"$PY" -m benchmarks.goals "$OUTDIR" --device "$GOALS_DEVICE" 2>&1 | tee -a "$SUMMARY"

if [ -s "$OUTDIR/bench.log" ]; then
    { echo "--- bench.log (last 100 lines)"; tail -n 100 "$OUTDIR/bench.log"; } >> "$SUMMARY"
fi
note "files: $(ls "$OUTDIR" | tr '\n' ' ')"
note "gpu tests exit status: $TEST_RC"
exit "$TEST_RC"
