#!/usr/bin/env bash
# One GPU session: the optimiser on the GPU vs the CPU (held-out pairs), then a student distilled
# from the optimisation teacher (teacher-flow cache built on the GPU, batched) on SynthMorph-style
# pairs synthesised from the TRAINING label maps only. Writes everything under $OUT.
# Needs: runs/heldout_pairs/t1 (benchmarks/optimise_heldout.py makes it), runs/train_labelmaps
# (a copy of the 15 training maps of medistill.data.split_label_maps, read whole:
# data.holdout=false; before 2026-11-30 it was split again and only 10 were used), and on a machine without
# nibabel / lightning-fabric their wheels in .whl/. Settings: STEPS, PAIRS, CHECK_S (0 skips
# the device check), AFFINE (data.augment_affine of the training pairs), INIT (a checkpoint whose
# weights start the student: loop.init, e.g. src/medistill/builtin/brain_ldr_v1.pt), LR (3e-4; the
# learning rate halves at 60 % and 85 % of STEPS).
source "$(dirname "$0")/gpu_env.sh"
OUT=${OUT:-runs/gpu}
STEPS=${STEPS:-3000}
PAIRS=${PAIRS:-1200}
LR=${LR:-3.0e-4}
DECAY="[$((STEPS * 60 / 100)),$((STEPS * 85 / 100))]"
INIT_SET=()
if [ -n "${INIT:-}" ]; then INIT_SET=(--set "loop.init=$INIT"); fi
mkdir -p "$OUT"
nvidia-smi -L || true
if [ "${CHECK_S:-150}" -gt 0 ]; then
  timeout "${CHECK_S:-150}" python3 benchmarks/optimise_device.py \
    --pairs runs/heldout_pairs/t1/pairs.csv --out "$OUT/optimise_device.json" --cpu-pairs 2 \
    2>&1 | tee "$OUT/optimise_device.log" || true
fi
python3 -m medistill.cli.main train student --config cpu-64 --out "$OUT/student" \
  --set data.source=labelmaps --set data.path=runs/train_labelmaps \
  --set data.pairs="$PAIRS" --set data.augment_disp=6.0 --set data.holdout=false \
  --set "data.augment_affine=${AFFINE:-[0,0,0]}" \
  --set model.cascades=2 --set model.student_variant=ldr \
  --set distill.mode=l1 --set distill.teacher=optimise --set distill.teacher_config=brain \
  --set 'distill.teacher_set=["deformable.levels=[2,1]","deformable.iterations=[80,40]"]' \
  --set distill.teacher_batch=50 --set distill.cache=/tmp/flow_cache \
  --set loop.steps="$STEPS" --set loop.batch_size=8 --set loop.lr="$LR" ${INIT_SET[@]+"${INIT_SET[@]}"} \
  --set "loop.lr_decay_steps=$DECAY" --set loop.checkpoint_every=250 --set loop.log_every=50 \
  --set loop.progress=false --set loop.deterministic=false 2>&1 | tee "$OUT/train.log"
