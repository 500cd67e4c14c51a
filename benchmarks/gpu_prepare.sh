#!/usr/bin/env bash
# Prepares, on this CPU machine, what the device runs of gpu_students.sh and gpu_distill.sh carry
# (runs/ and .whl/ are not in git, and a new checkout starts without them):
#   runs/train_labelmaps         copies of the training maps of medistill.data.split_label_maps
#                                (training_seg_01..15 of ../shared/data/labelmaps);
#   runs/heldout_pairs/{t1,random}  the held-out pairs of benchmarks/optimise_heldout.py (its
#                                default spacing 2 mm and seed 0: the same pairs it would build);
#   .whl/                        wheels of nibabel and lightning-fabric, the versions installed
#                                here (the device image has neither; gpu_env.sh installs them).
# Idempotent: what exists is kept. Then, e.g.: run(carry=["runs/train_labelmaps",
# "runs/heldout_pairs", ".whl"], command="bash benchmarks/gpu_students.sh", timeout_s=580).
# Settings: SHARED (default ../shared/data), PY (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
PY=${PY:-python3}
"$PY" - "$SHARED/labelmaps" <<'PYEOF'
import shutil
import sys
from pathlib import Path

from medistill.data import make_heldout_pairs, split_label_maps

maps = Path(sys.argv[1])
train, _ = split_label_maps(maps)
out = Path("runs/train_labelmaps")
out.mkdir(parents=True, exist_ok=True)
for f in train:
    if not (out / f.name).exists():
        shutil.copy2(f, out / f.name)
print(f"{out}: {len(train)} training maps")
for contrast in ("t1", "random"):
    folder = Path("runs/heldout_pairs") / contrast
    if not (folder / "pairs.csv").is_file():
        make_heldout_pairs(maps, folder, contrast=contrast, spacing=2.0, seed=0)
    print(f"{folder}: ready")
PYEOF
mkdir -p .whl
for pkg in nibabel lightning-fabric; do
  version=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
  "$PY" -m pip download -q --no-deps -d .whl "$pkg==$version"
done
ls .whl
