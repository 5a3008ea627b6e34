#!/usr/bin/env bash
# GPU check of the training step (docs/benchmarks.md, "GPU check"): ViT-B single-view batch 32 and
# ViT-B 4-view multi-view steps/s with bf16 autocast, against the backbone alone, plus peak memory.
#
#   bash benchmarks/gpu_check.sh [extra bench_gpu.py options]
#
# Run from the repository root on a machine with one CUDA GPU; finishes in about 3-5 minutes, plus the
# compilation of the compiled variants (optim.compile=reduce-overhead; `--compile` with no mode skips
# them), and is stopped after GPU_CHECK_LIMIT_S seconds (default 460, under 8 minutes). The report is
# written after each stage, so a stopped run keeps what it measured. Needs a Python with torch
# (CUDA build), timm, numpy, scipy, h5py, opencv and pyyaml: $PYTHON if set, else the first of python3,
# python, .venv/bin/python that imports them and sees a GPU. Nothing is installed or downloaded.
# The JSON report goes to $OUT/bench_gpu.json when OUT is set (the log beside it), else to stdout.
set -u
cd "$(dirname "$0")/.." || exit 2

limit="${GPU_CHECK_LIMIT_S:-460}"
probe='import sys, torch, timm, numpy, scipy, h5py, cv2, yaml; sys.exit(0 if torch.cuda.is_available() else 3)'

python_bin=""
found_no_gpu=""
for cand in ${PYTHON:-} python3 python .venv/bin/python; do
    command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ] || continue
    "$cand" -c "$probe" >/dev/null 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then python_bin="$cand"; break; fi
    if [ "$rc" -eq 3 ]; then found_no_gpu="$found_no_gpu $cand"; fi
done

if [ -z "$python_bin" ]; then
    if [ -n "$found_no_gpu" ]; then
        echo "gpu_check: torch is installed (${found_no_gpu# }) but sees no CUDA GPU; run this on the GPU" \
             "machine, or smoke-test on a CPU with: python benchmarks/bench_gpu.py --device cpu --tiny" >&2
    else
        echo "gpu_check: no Python with torch, timm, numpy, scipy, h5py, opencv-python and pyyaml found" \
             "(tried: ${PYTHON:-} python3 python .venv/bin/python); set PYTHON=/path/to/python, or carry the" \
             "missing packages as wheels (see /work/.library/device/README.md)" >&2
    fi
    exit 2
fi

export PYTHONUNBUFFERED=1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export PYTHONDONTWRITEBYTECODE=1
# Why a compiled graph was compiled again goes to the log (CUDA graph skips are warnings: always there).
export TORCH_LOGS="${TORCH_LOGS:-recompiles}"

echo "gpu_check: $("$python_bin" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))')"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,temperature.gpu --format=csv
fi

args=(benchmarks/bench_gpu.py --device cuda "$@")
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    args+=(--out "$OUT/bench_gpu.json")
    timeout --signal=TERM --kill-after=20 "$limit" "$python_bin" "${args[@]}" 2>&1 | tee "$OUT/bench_gpu.log"
    rc=${PIPESTATUS[0]}
else
    timeout --signal=TERM --kill-after=20 "$limit" "$python_bin" "${args[@]}"
    rc=$?
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "gpu_check: stopped after ${limit} s (rerun with fewer --seconds or one of --modes singleview multiview)" >&2
fi
exit "$rc"
