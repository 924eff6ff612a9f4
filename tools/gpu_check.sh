#!/usr/bin/env bash
# The Triton backend's device check in one command (issue 7): the kernel tests run natively on
# the GPU, then the full benchmark. Needs only torch, triton, numpy, numba, h5py and pytest on the
# machine: the package is assembled in a temporary folder (su_neuro/, kernels/ as
# su_neuro.kernels, datasets/ as su_neuro.datasets), nothing is installed.
# Usage: tools/gpu_check.sh [OUTDIR]   (default: $OUT, else /tmp/su_neuro_gpu). About 4 minutes on
# one H200: tests ~60 s, benchmark ~150 s (measured before the triton-grid rows: 45 s, 100 s).
# Copy the four files into docs/gpu/ afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/su_neuro_gpu}}"
mkdir -p "$out"
site="$(mktemp -d)"
mkdir -p "$site/su_neuro"
cp -r su_neuro/. "$site/su_neuro/"
cp -r kernels "$site/su_neuro/kernels"
cp -r datasets "$site/su_neuro/datasets"
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    python -c "import torch, triton, su_neuro; print('torch', torch.__version__, 'triton', triton.__version__, 'su_neuro from', su_neuro.__file__)"
} 2>&1 | tee "$out/device.txt"
# the multi-program kernels first, alone (some 40 kernel compilations): their per-step
# barrier is checked only here, and a broken one hangs (then the rest runs without them)
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k grid_kernels 2>&1 \
    | tee "$out/test_triton_grid.txt"
grid=${PIPESTATUS[0]}
nogrid=()
[ "$grid" -eq 0 ] || nogrid=(--no-grid)
# (the compile-only tools/triton_aot.py tests need no GPU: left out here)
timeout 300 python -m pytest -q -p no:cacheprovider tests/test_triton_backend.py -k "not benchmark and not grid_kernels and not aot" 2>&1 \
    | tee "$out/test_triton.txt"
tests=${PIPESTATUS[0]}
timeout 360 python tools/bench_triton.py "${nogrid[@]}" 2>&1 | tee "$out/bench_triton.txt"
bench=${PIPESTATUS[0]}
echo "grid tests exit $grid" | tee -a "$out/device.txt"
echo "tests exit $tests, benchmark exit $bench" | tee -a "$out/device.txt"
[ "$grid" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
