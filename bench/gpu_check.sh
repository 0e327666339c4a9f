#!/usr/bin/env bash
# The GPU rows of bench/README.md in one short run (about 5 minutes on one H100/H200). Installs nothing:
# it assumes torch, ray and optuna are importable and runs the project from this checkout (PYTHONPATH).
#
#   bash bench/gpu_check.sh             # on a machine with one CUDA GPU
#   DRY_RUN=1 bash bench/gpu_check.sh   # the same scripts on the CPU at toy size, to check they run
#
# 1. train_throughput.py at paper scale: width 64 (31M parameters), batch 16, bf16 autocast, channels_last,
#    26 steps per epoch (9 on the phantom, used when ../shared/data/emidec-lge-128 is absent), 3 timed
#    epochs strictly alternating with the fp32 tutorial loop;
#    FLOPs per image, TFLOP/s, fraction of the bf16 peak, epoch overheads.
# 2. grid_overhead.py --modes gpu-packed: the three L2 trials of the quick study at width 64 on the
#    synthetic phantom, 3 epochs, with resources.gpu=0.33 (all three on the GPU at once) against the same
#    three trials one after the other on the same GPU.
# Results: bench/results/*.json; tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
RESULTS=bench/results
mkdir -p "$RESULTS"

if [[ "${DRY_RUN:-0}" == "1" ]]; then
  echo "== DRY RUN on the CPU (toy sizes; the numbers mean nothing) =="
  TT=(--device cpu --widths 4 --steps 1 --reps 1 --precision bf16 --channels-last true
      --json "$RESULTS/gpu_check_dry_throughput.json")
  GO=(--device cpu --modes serial --epochs 1 --reps 1 --set model.width=4 --json "$RESULTS/gpu_check_dry_grid.json")
  LIMIT_TT=600 LIMIT_GO=600
else
  "$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch (use DRY_RUN=1 to check the scripts on the CPU)")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null || true
  TT=(--device cuda --widths 64 --steps 26 --reps 3 --warmup-epochs 1
      --json "$RESULTS/train_throughput_cuda.json")
  GO=(--device cuda --modes gpu-packed --epochs 3 --reps 1 --set model.width=64 --json "$RESULTS/grid_overhead_cuda.json")
  LIMIT_TT=240 LIMIT_GO=300
fi

echo "== 1. training throughput =="
timeout "$LIMIT_TT" "$PY" bench/train_throughput.py "${TT[@]}"
echo
echo "== 2. GPU packing: 3 trials at resources.gpu=0.33 vs sequential =="
timeout "$LIMIT_GO" "$PY" bench/grid_overhead.py "${GO[@]}"
