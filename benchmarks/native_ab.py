"""Before/after check of the native-grid pipeline on held-out pairs: Dice of the built-in model,
its fields, and the optimiser's time and Dice per pair, for whichever medistill is imported.

Run it once per code version (an older one from a ``git worktree`` put first on PYTHONPATH),
saving the fields of the first run and comparing the second with them:

    git worktree add /tmp/wt_old <old-commit>
    PYTHONPATH=/tmp/wt_old/src OMP_NUM_THREADS=2 python benchmarks/native_ab.py \\
        --data runs/heldout_pairs/t1 --save runs/native_ab/old
    OMP_NUM_THREADS=2 python benchmarks/native_ab.py --data runs/heldout_pairs/t1 \\
        --compare runs/native_ab/old

Prints the mean Dice (structures present in the fixed map) of the built-in model over
``--pairs`` pairs, the largest field difference to ``--compare`` (voxels), and the optimiser's
seconds and Dice on its first ``--optimiser-pairs`` pairs.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from medistill.builtin import resolve_model
from medistill.io import load
from medistill.optimise import register_optimise
from medistill.registration.methods import network_registrar


def dice(warped: np.ndarray, truth: np.ndarray) -> float:
    scores = []
    for k in np.unique(truth):
        if k == 0:
            continue
        a, b = warped == k, truth == k
        scores.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("runs/heldout_pairs/t1"))
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--optimiser-pairs", type=int, default=4)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(int(torch.get_num_threads()))
    with open(args.data / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[: max(args.pairs, args.optimiser_pairs)]

    def images(row):
        return [
            load(args.data / row[k], is_label=k.endswith("labels"))
            for k in ("fixed", "moving", "moving_labels", "fixed_labels")
        ]

    registrar, *_ = network_registrar(resolve_model("brain"))
    scores, worst = [], 0.0
    for i, row in enumerate(rows[: args.pairs]):
        fixed, moving, labels, truth = images(row)
        reg = registrar(fixed, moving, moving_labels=labels)
        scores.append(dice(reg.warped_labels.data, truth.data))
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            np.save(args.save / f"disp_{i}.npy", reg.disp_voxel)
        if args.compare:
            worst = max(
                worst, float(np.abs(np.load(args.compare / f"disp_{i}.npy") - reg.disp_voxel).max())
            )
    print(f"built-in model, {len(scores)} pairs: Dice {np.mean(scores):.5f}")
    if args.compare:
        print(f"largest field difference to {args.compare}: {worst:.2e} voxel")
    seconds, opt_scores = [], []
    for row in rows[: args.optimiser_pairs]:
        fixed, moving, labels, truth = images(row)
        start = time.perf_counter()
        reg = register_optimise(fixed, moving, moving_labels=labels)
        seconds.append(time.perf_counter() - start)
        opt_scores.append(dice(reg.warped_labels.data, truth.data))
    print(
        f"optimiser, {len(seconds)} pairs: {np.mean(seconds):.2f} s per pair "
        f"({', '.join(f'{s:.2f}' for s in seconds)}), Dice "
        f"{', '.join(f'{d:.4f}' for d in opt_scores)}"
    )


if __name__ == "__main__":
    main()
