#!/usr/bin/env bash
# A prepared check for a GPU machine (never part of the tests). About 5 minutes on one H100/H200:
#   1. bf16 training throughput of the 314M preset at sequence 2048 (the real training step of
#      `plasticlm bench`), with MFU against the dense bf16 peak (989 TFLOP/s for H100/H200 SXM;
#      PEAK_TFLOPS=... for another GPU), with torch.compile off and on; and whether SDPA can take
#      its flash kernel for the model's attention under bf16;
#   2. an FSDP2 run of a few steps (torchrun; one rank per GPU, or one rank on a single GPU), its DCP
#      checkpoint, and `probe --print-jobs` on it;
#   3. DDP on two ranks against one process, same global batch: final validation losses side by side
#      (NCCL with two GPUs; gloo with both ranks on cuda:0 when there is one).
# Usage: bash benchmarks/gpu_check.sh [WORK_DIR]    (PYTHON=... to override the interpreter; PARTS="2 3" to
# run only some parts; DTYPE=float32 for parts 2 and 3 in float32 instead of bf16 autocast)
# Every part runs even if an earlier one failed; the summary at the end lists each part's exit status
# and the script exits non-zero if any failed. SMOKE=1 runs every part on the CPU with tiny presets
# (a dry run of the script itself, a few minutes on a laptop; its numbers mean nothing).
set -uo pipefail
WORK=${1:-/tmp/plasticlm-gpu-check}
PY=${PYTHON:-python}
PEAK=${PEAK_TFLOPS:-989}
SMOKE=${SMOKE:-0}
PARTS=${PARTS:-1 2 3}
export PLASTICLM_HOME=${PLASTICLM_HOME:-$WORK/home}
mkdir -p "$WORK"
if [ "$SMOKE" = 1 ]; then
  DEV=cpu; BIG=3K; BIG_T=64; BATCHES="4"; MID=3K; SMALL=3K; SEQ=256; DTYPE=float32; BENCH_DTYPE=float32; NGPU=0
else
  DEV=cuda; BIG=314M; BIG_T=2048; BATCHES="16 32"; MID=106M; SMALL=27M; SEQ=512; DTYPE=${DTYPE:-bfloat16}; BENCH_DTYPE=bfloat16
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
  [ "$NGPU" -ge 1 ] || { echo "no CUDA device: nothing to check (SMOKE=1 for a CPU dry run)"; exit 1; }
fi
$PY - <<'EOF'
import platform, torch
import plasticlm
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"== python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}, GPU: {gpu}, "
      f"{torch.cuda.device_count()} device(s); plasticlm from {plasticlm.__file__}")
EOF

declare -A STATUS
part() {  # part NAME COMMAND...: run one part, time it, keep its exit status, go on either way
  local name=$1; shift
  [[ " $PARTS " == *" ${name%%[a-z.]*} "* ]] || return 0
  echo; echo "== $name"
  local t0=$SECONDS
  "$@"; local rc=$?
  STATUS[$name]="exit $rc, $((SECONDS - t0)) s"
  echo "-- $name: ${STATUS[$name]}"
}

bench() {
  $PY - "$PEAK" "$DEV" "$BIG" "$BIG_T" "$BENCH_DTYPE" $BATCHES <<'EOF'
import sys, time
import torch
from plasticlm.bench import bench_presets
peak, dev, preset, seq, dtype, batches = float(sys.argv[1]) * 1e12, sys.argv[2], sys.argv[3], int(sys.argv[4]), \
    sys.argv[5], [int(b) for b in sys.argv[6:]]
runs = [(batches[0], "off")] + [(b, "on") for b in batches]
for batch, comp in runs:
    t0 = time.perf_counter()
    try:
        row = bench_presets([preset], vocab_size=50304, seq_len=seq, batch_size=batch, steps=10, device=dev,
                            dtype=dtype, compile=comp)[0]
    except Exception as e:  # noqa: BLE001 - report and go on to the next setting
        print(f"batch {batch} x {seq}, compile {comp}: FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
        continue
    mfu = row["flops_per_token"] * row["tokens_per_s"] / peak
    print(f"batch {batch} x {seq}, compile {comp}: {row['tokens_per_s']:,} tok/s, {row['ms_per_step']} ms/step, "
          f"peak mem {row['peak_mem_mb']:.0f} MiB, MFU {mfu:.1%} (of {peak / 1e12:g} TFLOP/s; bench's own: "
          f"{row['mfu']:.1%}, {row['peak_source']}), whole call {time.perf_counter() - t0:.0f} s", flush=True)
    if dev == "cuda":
        torch.cuda.empty_cache()
EOF
}

flash() {  # can the model's attention call take SDPA's flash kernel at this shape and dtype?
  $PY - "$DEV" "$BIG" "$BIG_T" <<'EOF'
import sys
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from plasticlm.model import GPT, from_preset
dev, preset, seq = torch.device(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if dev.type != "cuda":
    print("flash attention is a CUDA kernel: nothing to check on CPU")
    sys.exit(0)
model = GPT(from_preset(preset, vocab_size=50304, seq_len=seq)).to(dev)
x = torch.randint(0, 50304, (2, seq + 1), device=dev)
for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
    with sdpa_kernel([backend]), torch.autocast("cuda", dtype=torch.bfloat16):
        try:
            model(x[:, :-1], x[:, 1:]).backward()
            print(f"{backend.name}: usable (the default dispatcher takes the first usable of flash, efficient, math)")
        except RuntimeError as e:
            print(f"{backend.name}: NOT usable: {str(e).splitlines()[0][:200]}")
EOF
}

COMMON=(--set data.source=synthetic --set data.synthetic_bytes=2000000 --set data.vocab_size=4096
        --set model.seq_len=$SEQ --set "stream.languages=[en,fr]" --set stream.tokens_per_task=262144
        --set stream.cycles=1 --set train.batch_size=16 --set train.device=$DEV --set train.dtype=$DTYPE
        --set eval.sequences=32 --set "probe.after_languages=[]" --set probe.in_run=false --quiet --json)
CFG=configs/demo.toml
TORCHRUN=($PY -m torch.distributed.run --standalone)

fsdp() {
  local np=$(( NGPU >= 2 ? 2 : 1 )) extra=()
  [ "$SMOKE" = 1 ] && np=2 || extra=(--set dist.param_dtype=bfloat16)
  "${TORCHRUN[@]}" --nproc_per_node=$np -m plasticlm train $CFG "${COMMON[@]}" --set model.preset=$MID \
    --set dist.strategy=fsdp "${extra[@]}" --run-dir "$WORK/fsdp" --overwrite > "$WORK/fsdp.json" || return
  $PY -m plasticlm probe "$WORK/fsdp" --print-jobs || return
  ls "$WORK/fsdp/checkpoints/$(cat "$WORK/fsdp/checkpoints/latest")" || return
  $PY -c "import json; d = json.load(open('$WORK/fsdp.json')); print('fsdp steps', d['steps'], 'wall', d['wall_time_s'], 's', d['final'])"
}

ddp() {
  local backend=(--set dist.backend=gloo)
  if [ "$NGPU" -ge 2 ]; then backend=(--set dist.backend=nccl); elif [ "$DEV" = cuda ]; then backend+=(--set train.device=cuda:0); fi
  $PY -m plasticlm train $CFG "${COMMON[@]}" --set model.preset=$SMALL --run-dir "$WORK/single" --overwrite \
    > "$WORK/single.json" || return
  "${TORCHRUN[@]}" --nproc_per_node=2 -m plasticlm train $CFG "${COMMON[@]}" --set model.preset=$SMALL \
    --set dist.strategy=ddp "${backend[@]}" --run-dir "$WORK/ddp" --overwrite > "$WORK/ddp.json" || return
  $PY - "$WORK" <<'EOF'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/{n}.json")) for n in ("single", "ddp"))
print(f"single: {a['steps']} steps in {a['wall_time_s']} s; ddp: {b['steps']} steps in {b['wall_time_s']} s")
rows = [[json.loads(line) for line in open(f"{sys.argv[1]}/{n}/metrics.jsonl")] for n in ("single", "ddp")]
train = [[(r["step"], r["train/loss"]) for r in rs if "train/loss" in r] for rs in rows]
for (step, x), (_, y) in list(zip(*train))[:3]:  # float noise grows over training: the first steps say most
    print(f"train/loss at step {step}: single {x:.6f}  ddp {y:.6f}  rel diff {abs(x - y) / x:.2e}")
for k in sorted(a["final"]):
    if k.endswith("/loss"):
        x, y = a["final"][k], b["final"][k]
        print(f"{k}: single {x:.5f}  ddp {y:.5f}  rel diff {abs(x - y) / x:.2e}")
EOF
}

part "1a. $BENCH_DTYPE $BIG at T = $BIG_T: tokens/s, MFU, compile off/on" bench
part "1b. SDPA kernels for $BIG at T = $BIG_T under bf16" flash
part "2. FSDP2, a few steps ($MID preset)" fsdp
part "3. DDP on two ranks vs one process ($SMALL preset), same global batch" ddp

echo; echo "== summary ($WORK)"
failed=0
for name in "${!STATUS[@]}"; do echo "$name: ${STATUS[$name]}"; done | sort
for name in "${!STATUS[@]}"; do [[ ${STATUS[$name]} == "exit 0,"* ]] || failed=1; done
exit $failed
