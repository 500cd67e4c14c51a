#!/usr/bin/env bash
# One GPU session, four registration students trained side by side on one device from the same
# teacher-flow cache (the optimisation teacher, built once: the other runs wait on its lock), then
# scored on the held-out pairs (CPU):
#   product: distill.mode=l1 from INIT (default: the built-in model's weights), STEPS steps: the
#            candidate for the next built-in model;
#   none, l1, aldk: from scratch, ABL_STEPS steps each: issue 10's comparison of no distillation,
#            field regression and the adversarial critic, at equal steps on equal pairs.
# Every run checkpoints every 250 steps and stops at TRAIN_S seconds (timeout) so that the session
# budget holds; the scoring uses each run's model.pt, or its last.pt when the run was stopped.
# Needs runs/train_labelmaps (copies of the 15 training maps) and runs/heldout_pairs/{t1,random}
# (benchmarks/optimise_heldout.py makes them); on a machine without nibabel / lightning-fabric
# their wheels in .whl/. Settings: OUT, STEPS, ABL_STEPS, PAIRS, INIT, LR, TRAIN_S, EVAL_PAIRS
# (held-out pairs scored per contrast, default all 20), THREADS (CPU threads of the scoring).
source "$(dirname "$0")/gpu_env.sh"
OUT=${OUT:-runs/gpu_students}
STEPS=${STEPS:-6000}
ABL_STEPS=${ABL_STEPS:-3000}
PAIRS=${PAIRS:-3000}
INIT=${INIT:-src/medistill/builtin/brain_ldr_v1.pt}
LR=${LR:-3.0e-4}
TRAIN_S=${TRAIN_S:-420}
THREADS=${THREADS:-4}
mkdir -p "$OUT"
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
    --out "$OUT/$name" \
    --set data.source=labelmaps --set data.path=runs/train_labelmaps --set data.holdout=false \
    --set data.pairs="$PAIRS" --set data.augment_disp=6.0 \
    --set model.cascades=2 --set model.student_variant=ldr \
    --set distill.mode="$mode" ${teacher[@]+"${teacher[@]}"} \
    --set loop.steps="$steps" --set loop.batch_size=8 --set loop.lr="$LR" \
    --set "loop.lr_decay_steps=$decay" --set loop.checkpoint_every=250 --set loop.log_every=50 \
    --set loop.progress=false --set loop.deterministic=false "$@" \
    > "$OUT/$name.log" 2>&1 || echo "$name: stopped or failed (exit $?), see $OUT/$name.log"
}

train product l1 "$STEPS" --set "loop.init=$INIT" &
sleep "${LEAD_S:-20}"  # let the product run take the cache lock first; the others wait for its cache
train none none "$ABL_STEPS" &
train l1 l1 "$ABL_STEPS" &
train aldk aldk "$ABL_STEPS" &
wait
tail -n 2 "$OUT"/*.log

models=()
for name in product none l1 aldk; do
  for file in model.pt last.pt; do
    if [ -f "$OUT/$name/$file" ]; then models+=(--model "$name=$OUT/$name/$file"); break; fi
  done
done
models+=(--model "builtin=src/medistill/builtin/brain_ldr_v1.pt")
pairs=()
if [ -n "${EVAL_PAIRS:-}" ]; then pairs=(--pairs "$EVAL_PAIRS"); fi
for contrast in t1 random; do
  OMP_NUM_THREADS=$THREADS python3 benchmarks/optimise_heldout.py --data runs/heldout_pairs \
    --contrast "$contrast" --threads "$THREADS" --out "$OUT/heldout_$contrast" --only identity \
    "${pairs[@]+"${pairs[@]}"}" "${models[@]}" 2>&1 | tee "$OUT/heldout_$contrast.log" | grep '^|'
done
