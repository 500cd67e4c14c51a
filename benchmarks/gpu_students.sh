#!/usr/bin/env bash
# One GPU session, four registration students trained side by side on one device from the same
# teacher-flow cache (the optimisation teacher, built once: the other runs wait on its lock), then
# scored on the held-out pairs (CPU):
#   product: distill.mode=l1 from INIT (default: the built-in model's weights), STEPS steps: the
#            candidate for the next built-in model;
#   none, l1, aldk: from scratch, ABL_STEPS steps each: issue 10's comparison of no distillation,
#            field regression and the adversarial critic on equal pairs.
# Every run checkpoints every CKPT steps and is stopped at TRAIN_S seconds (timeout) so that the
# session budget holds: the scoring then uses its last.pt, and OUT/runs.txt says at which step
# each run stopped (a run stopped before its steps ran without its last learning-rate decays).
# Training folders go to WORK; OUT gets at most 6 files (a device returns 8): runs.txt, the
# product packed in float16 (product_fp16.pt, loadable as --model), and the two scoring logs and
# summaries. Needs runs/train_labelmaps (copies of the 15 training maps) and
# runs/heldout_pairs/{t1,random} (benchmarks/optimise_heldout.py makes them); on a machine
# without nibabel / lightning-fabric their wheels in .whl/ (carry it). Settings: OUT, WORK,
# STEPS, ABL_STEPS, PAIRS, INIT, LR, TRAIN_S, CKPT, LEAD_S (seconds the product run gets to take
# the cache lock first), EVAL_PAIRS (held-out pairs scored per contrast, default all 20),
# THREADS (CPU threads of the scoring). Run it as `bash benchmarks/gpu_students.sh`.
source "$(dirname "$0")/gpu_env.sh"
OUT=${OUT:-runs/gpu_students}
WORK=${WORK:-/tmp/gpu_students}
STEPS=${STEPS:-3000}
ABL_STEPS=${ABL_STEPS:-1000}
PAIRS=${PAIRS:-2000}
INIT=${INIT:-src/medistill/builtin/brain_ldr_v1.pt}
LR=${LR:-3.0e-4}
TRAIN_S=${TRAIN_S:-420}
CKPT=${CKPT:-100}
THREADS=${THREADS:-4}
mkdir -p "$OUT" "$WORK"
nvidia-smi -L || true

train() {  # name mode steps [extra --set ...]
  local name=$1 mode=$2 steps=$3
  shift 3
  local decay="[$((steps * 60 / 100)),$((steps * 85 / 100))]"
  local teacher=()
  if [ "$mode" != none ]; then
    teacher=(--set distill.teacher=optimise --set distill.teacher_config=brain
      --set 'distill.teacher_set=["deformable.levels=[2,1]","deformable.iterations=[80,40]"]'
      --set distill.teacher_batch=50 --set distill.cache=/tmp/flow_cache)
  fi
  timeout "$TRAIN_S" python3 -m medistill.cli.main train student --config cpu-64 \
    --out "$WORK/$name" \
    --set data.source=labelmaps --set data.path=runs/train_labelmaps --set data.holdout=false \
    --set data.pairs="$PAIRS" --set data.augment_disp=6.0 \
    --set model.cascades=2 --set model.student_variant=ldr \
    --set distill.mode="$mode" ${teacher[@]+"${teacher[@]}"} \
    --set loop.steps="$steps" --set loop.batch_size=8 --set loop.lr="$LR" \
    --set "loop.lr_decay_steps=$decay" --set loop.checkpoint_every="$CKPT" \
    --set loop.log_every=50 --set loop.progress=false --set loop.deterministic=false "$@" \
    > "$WORK/$name.log" 2>&1 || echo "$name: stopped or failed (exit $?)" >> "$WORK/stops.txt"
}

: > "$WORK/stops.txt"
train product l1 "$STEPS" --set "loop.init=$INIT" &
sleep "${LEAD_S:-20}"
train none none "$ABL_STEPS" &
train l1 l1 "$ABL_STEPS" &
train aldk aldk "$ABL_STEPS" &
wait

models=()
{
  cat "$WORK/stops.txt"
  for name in product none l1 aldk; do
    ckpt=""
    for file in model.pt last.pt; do
      if [ -f "$WORK/$name/$file" ]; then ckpt="$WORK/$name/$file"; break; fi
    done
    step=$(tail -n 1 "$WORK/$name/log.jsonl" 2>/dev/null || echo '{}')
    echo "$name: checkpoint ${ckpt:-none}; last log line $step"
    tail -n 3 "$WORK/$name.log"
    if [ -n "$ckpt" ]; then models+=(--model "$name=$ckpt"); fi
  done
} > "$OUT/runs.txt" 2>&1
cat "$OUT/runs.txt"
for file in model.pt last.pt; do
  if [ -f "$WORK/product/$file" ]; then
    python3 -c "import sys; from medistill.builtin import pack_checkpoint as p; \
print(p(sys.argv[1], sys.argv[2]))" "$WORK/product/$file" "$OUT/product_fp16.pt"
    break
  fi
done
models+=(--model "builtin=src/medistill/builtin/brain_ldr_v1.pt")
pairs=()
if [ -n "${EVAL_PAIRS:-}" ]; then pairs=(--pairs "$EVAL_PAIRS"); fi
for contrast in t1 random; do
  OMP_NUM_THREADS=$THREADS python3 benchmarks/optimise_heldout.py --data runs/heldout_pairs \
    --contrast "$contrast" --threads "$THREADS" --out "$WORK/heldout_$contrast" --only identity \
    ${pairs[@]+"${pairs[@]}"} "${models[@]}" > "$OUT/heldout_$contrast.log" 2>&1 \
    || echo "scoring $contrast failed (exit $?)" >> "$OUT/runs.txt"
  cp "$WORK/heldout_$contrast/summary.json" "$OUT/heldout_$contrast.json" 2>/dev/null || true
  grep '^|' "$OUT/heldout_$contrast.log" || true
done
