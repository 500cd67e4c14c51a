#!/usr/bin/env bash
# Issue 10's students on the CPU, one at a time: `bash benchmarks/cpu_students.sh NAME MODE [ARGS]`
# trains a registration student NAME (folder $OUT/NAME, log $OUT/NAME.log) from scratch with
# distill.mode=MODE (none, l1, aldk, l1_aldk) on PAIRS pairs synthesised from the 15 training label
# maps (runs/train_labelmaps: benchmarks/gpu_prepare.sh makes it), for STEPS steps of batch 8,
# learning rate 3e-4 halved at 60 % and 85 % of the steps; the optimisation teacher's fields are
# cached once in $OUT/flow_cache and shared by every student of $OUT (so all see the same pairs).
# ARGS are extra options of `medistill train student` (e.g. --set distill.adv_per_element=true).
# A stopped run continues with --resume. Then score them on the held-out pairs:
#   OMP_NUM_THREADS=2 python benchmarks/optimise_heldout.py --contrast t1 --only identity \
#     --out $OUT/heldout_t1 --model none=$OUT/none/model.pt --model l1=$OUT/l1/model.pt \
#     --paired l1:none
# Settings: OUT (runs/cpu_students), STEPS (800), PAIRS (400), SEED (data and loop seed, 0),
# THREADS (2), MEDISTILL (the command, default `python3 -m medistill.cli.main`).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash benchmarks/cpu_students.sh NAME MODE [medistill train args]" >&2
  exit 2
fi
OUT=${OUT:-runs/cpu_students}
STEPS=${STEPS:-800}
PAIRS=${PAIRS:-400}
SEED=${SEED:-0}
export OMP_NUM_THREADS=${THREADS:-2}
read -r -a MEDISTILL <<< "${MEDISTILL:-python3 -m medistill.cli.main}"
name=$1 mode=$2
shift 2
decay="[$((STEPS * 60 / 100)),$((STEPS * 85 / 100))]"
teacher=()
if [ "$mode" != none ]; then
  teacher=(--set distill.teacher=optimise --set distill.teacher_config=brain
    --set 'distill.teacher_set=["deformable.levels=[2,1]","deformable.iterations=[80,40]"]'
    --set distill.teacher_batch=4 --set "distill.cache=$OUT/flow_cache")
fi
resume=()
if [ -f "$OUT/$name/last.pt" ]; then resume=(--resume); fi
mkdir -p "$OUT"
"${MEDISTILL[@]}" train student --config cpu-64 --out "$OUT/$name" ${resume[@]+"${resume[@]}"} \
  --set data.source=labelmaps --set data.path=runs/train_labelmaps --set data.holdout=false \
  --set data.pairs="$PAIRS" --set data.augment_disp=6.0 --set data.seed="$SEED" \
  --set loop.seed="$SEED" --set model.cascades=2 --set model.student_variant=ldr \
  --set distill.mode="$mode" ${teacher[@]+"${teacher[@]}"} \
  --set loop.steps="$STEPS" --set loop.batch_size=8 --set loop.lr=3.0e-4 \
  --set "loop.lr_decay_steps=$decay" --set loop.checkpoint_every=50 \
  --set loop.log_every=25 --set loop.progress=false --set loop.deterministic=false "$@" \
  >> "$OUT/$name.log" 2>&1
echo "$name: done $(date -u +%FT%TZ)" | tee -a "$OUT/done.txt"
