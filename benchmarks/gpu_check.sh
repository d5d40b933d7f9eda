#!/usr/bin/env bash
# A prepared check for a GPU machine (never part of the tests). Under 5 minutes on one H100/H200:
#   1. bf16 training throughput of the 314M preset at sequence 2048 (the real training step of
#      `plasticlm bench`), with MFU against the dense bf16 peak (989 TFLOP/s for H100/H200 SXM;
#      PEAK_TFLOPS=... for another GPU);
#   2. an FSDP2 run of a few steps (torchrun; one rank per GPU, or one rank on a single GPU);
#   3. DDP on two ranks against one process, same global batch: final validation losses side by side
#      (NCCL with two GPUs; gloo with both ranks on cuda:0 when there is one).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]    (PYTHON=... to override the interpreter)
# Each part prints its numbers; the script stops at the first failure (set -e).
set -euo pipefail
OUT=${1:-${OUT:-/tmp/plasticlm-gpu-check}}
PY=${PYTHON:-python}
PEAK=${PEAK_TFLOPS:-989}
export PLASTICLM_HOME=${PLASTICLM_HOME:-$OUT/home}
mkdir -p "$OUT"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
echo "== $NGPU GPU(s): $($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')")"
[ "$NGPU" -ge 1 ] || { echo "no CUDA device: nothing to check"; exit 1; }

echo "== 1. bf16 314M at T = 2048: tokens/s and MFU (peak $PEAK TFLOP/s)"
$PY - "$PEAK" <<'EOF'
import sys
from plasticlm.bench import bench_presets
from plasticlm.model import flops_per_token, from_preset
peak = float(sys.argv[1]) * 1e12
for batch in (8, 16):
    row = bench_presets(["314M"], vocab_size=50304, seq_len=2048, batch_size=batch, steps=10, device="cuda",
                        dtype="bfloat16")[0]
    fpt = flops_per_token(from_preset("314M", vocab_size=50304, seq_len=2048))
    print(f"batch {batch} x 2048: {row['tokens_per_s']:,} tok/s, {row['ms_per_step']} ms/step, peak mem "
          f"{row['peak_mem_mb']:.0f} MiB, MFU {fpt * row['tokens_per_s'] / peak:.1%}")
EOF

COMMON=(--set data.source=synthetic --set data.synthetic_bytes=2000000 --set data.vocab_size=4096
        --set model.seq_len=512 --set "stream.languages=[en,fr]" --set stream.tokens_per_task=262144
        --set stream.cycles=1 --set train.batch_size=16 --set train.device=cuda --set train.dtype=bfloat16
        --set eval.sequences=32 --set "probe.after_languages=[]" --set probe.in_run=false --quiet --json)
CFG=configs/demo.toml

echo "== 2. FSDP2, a few steps (106M preset, bf16 parameters)"
NP=$(( NGPU >= 2 ? 2 : 1 ))
$PY -m torch.distributed.run --standalone --nproc_per_node=$NP -m plasticlm train $CFG "${COMMON[@]}" --set model.preset=106M \
  --set dist.strategy=fsdp --set dist.param_dtype=bfloat16 --run-dir "$OUT/fsdp" --overwrite > "$OUT/fsdp.json"
$PY -m plasticlm probe "$OUT/fsdp" --print-jobs
ls "$OUT/fsdp/checkpoints/$(cat "$OUT/fsdp/checkpoints/latest")"
$PY -c "import json; d = json.load(open('$OUT/fsdp.json')); print('fsdp steps', d['steps'], 'wall', d['wall_time_s'], 's', d['final'])"

echo "== 3. DDP on two ranks vs one process (25M-ish: 27M preset), same global batch"
$PY -m plasticlm train $CFG "${COMMON[@]}" --set model.preset=27M --run-dir "$OUT/single" --overwrite > "$OUT/single.json"
if [ "$NGPU" -ge 2 ]; then DDP=(--set dist.backend=nccl); else DDP=(--set dist.backend=gloo --set train.device=cuda:0); fi
$PY -m torch.distributed.run --standalone --nproc_per_node=2 -m plasticlm train $CFG "${COMMON[@]}" --set model.preset=27M \
  --set dist.strategy=ddp "${DDP[@]}" --run-dir "$OUT/ddp" --overwrite > "$OUT/ddp.json"
$PY - "$OUT" <<'EOF'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/{n}.json"))["final"] for n in ("single", "ddp"))
for k in sorted(a):
    if k.endswith("/loss"):
        print(f"{k}: single {a[k]:.5f}  ddp {b[k]:.5f}  rel diff {abs(a[k] - b[k]) / a[k]:.2e}")
EOF
echo "== done ($OUT)"
