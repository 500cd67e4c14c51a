"""Where a registration student loses to its optimisation teacher: the network's parts run
separately on the held-out pairs, and the student against the teacher on training-style pairs.

Part 1, the held-out pairs of ``benchmarks/optimise_heldout.py`` (native grids, Dice over every
structure present in both maps), each row on the student's own working grid (``register_images``):

- ``affine stem``: the student's affine stem alone;
- ``student``: the whole network;
- ``optimiser affine``: the optimiser's affine stage (``brain`` preset) alone;
- ``optimiser affine + student cascades``: the student's deformable cascades started from the
  optimiser's affine (composed in closed form, as the network composes its own stem);
- ``teacher on the working grid``: the optimiser as the student's teacher was run
  (``deformable.levels=[2,1]``, ``deformable.iterations=[80,40]``) on that grid.

Part 2, SynthMorph-style pairs made as the training pairs are (``SynthPairs``: tissue classes,
shared random contrast, B-spline deformation of ``--max-disp`` voxels, on the 64^3 grid) from the
held-out maps (``--maps heldout``) or from a folder read as training reads ``data.path``
(``--maps FOLDER``; ``--no-holdout`` as ``data.holdout=false``), so that the training folder and
seed of a run give its own training pairs: Dice of the student and of that teacher
(nearest-neighbour label warp), and the mean end-point error between their fields (voxels).

``--teacher-set KEY=VALUE`` (repeatable) changes the teacher's settings on top of those two
(e.g. ``deformable.weight=2``: a smoother teacher); part 1 also gives SDlogJ and folding % of the
transform on the fixed grid, part 2 the teacher's SDlogJ on the 64^3 grid.

Usage (from the repository root):

    OMP_NUM_THREADS=2 python benchmarks/student_parts.py --model runs/gpu1/student/model.pt \\
        [--pairs 8] [--synth-pairs 6] [--maps heldout|FOLDER [--no-holdout]] [--seed 123] \\
        [--teacher-set deformable.weight=2]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimise_heldout import LABELMAPS, pair_metrics  # noqa: E402

TEACHER_SET = ["deformable.levels=[2,1]", "deformable.iterations=[80,40]"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="registration checkpoint")
    parser.add_argument("--data", type=Path, default=Path("runs/heldout_pairs/t1/pairs.csv"))
    parser.add_argument("--labelmaps", type=Path, default=LABELMAPS)
    parser.add_argument("--pairs", type=int, default=8, help="held-out pairs (part 1; 0 skips it)")
    parser.add_argument("--synth-pairs", type=int, default=6, help="synthetic pairs (part 2)")
    parser.add_argument("--maps", default="heldout", help="'heldout' or a label-map folder")
    parser.add_argument(
        "--holdout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split a --maps FOLDER as data.holdout does",
    )
    parser.add_argument("--max-disp", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=123, help="seed of the synthetic pairs")
    parser.add_argument(
        "--teacher-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="teacher setting on top of the training run's (repeatable)",
    )
    args = parser.parse_args()
    if not args.data.is_file() or not args.labelmaps.is_dir():
        print(f"skipped: {args.data} or {args.labelmaps} not found")
        return 0
    from medistill.data import load_subject, read_pairs_csv, split_label_maps
    from medistill.metrics import dice
    from medistill.metrics.jacobian import sdlogj
    from medistill.optimise import load_optimise_config
    from medistill.optimise.core import optimise
    from medistill.registration.model import load_model
    from medistill.registration.pairs import SynthPairs, load_label_maps
    from medistill.spatial import compose, jacobian_det, warp
    from medistill.spatial.native import register_images

    net, _, cfg = load_model(args.model)
    shape = tuple(cfg.data.shape)
    base = load_optimise_config(None, [])
    affine_only = dataclasses.replace(
        base, deformable=dataclasses.replace(base.deformable, kind="none")
    )
    teacher = load_optimise_config(None, [*TEACHER_SET, *args.teacher_set])

    def stem(f, m):
        with torch.inference_mode():
            return net.affine(f, m)[0]

    def student(f, m):
        with torch.inference_mode():
            return net.displacement(f, m)

    def opt_affine(f, m):
        return optimise(f, m, affine_only).disp

    def opt_affine_cascades(f, m):
        r = optimise(f, m, affine_only)
        agg, lin = r.disp, r.matrix[:, :, : f.dim() - 2]
        with torch.inference_mode():
            warped = warp(m, agg)
            for k, sub in enumerate(net.subnets):
                u = sub(f, warped)
                agg = torch.einsum("bij,bj...->bi...", lin, u) + agg if k == 0 else compose(agg, u)
                warped = warp(m, agg)
        return agg

    def teacher_field(f, m):
        return optimise(f, m, teacher).disp

    rows = {
        "affine stem": stem if net.affine is not None else None,
        "student": student,
        "optimiser affine": opt_affine,
        "optimiser affine + student cascades": opt_affine_cascades,
        "teacher on the working grid": teacher_field,
    }
    sources, pairs = read_pairs_csv(args.data)
    pairs = pairs[: args.pairs]
    subjects = [load_subject(s) for s in sources]
    print(f"part 1: {len(pairs)} held-out pairs, working grid {shape}")
    print("| row | Dice | SDlogJ | folding % | s/pair |")
    print("|---|---|---|---|---|")
    for name, fn in rows.items():
        if fn is None or not pairs:
            continue
        ds, ts, sd, fold = [], [], [], []
        for f, m in pairs:
            fixed, moving = subjects[f], subjects[m]
            t = time.perf_counter()
            reg = register_images(
                fn, fixed.image, moving.image, shape=shape, moving_labels=moving.labels
            )
            ts.append(time.perf_counter() - t)
            met = pair_metrics(
                reg.warped_labels.data,
                fixed.labels.data,
                moving.labels.data,
                np.asarray(reg.jacobian),
                fixed.image.spacing,
            )
            ds.append(met["dice"])
            sd.append(met["sdlogj"])
            fold.append(met["folding_pct"])
        print(
            f"| {name} | {np.mean(ds):.3f} +- {np.std(ds):.3f} | {np.mean(sd):.3f} | "
            f"{np.mean(fold):.3f} | {np.mean(ts):.2f} |"
        )

    if args.maps != "heldout":  # as training reads data.path
        maps = load_label_maps(args.maps, shape, holdout=args.holdout)
    else:  # a folder of the held-out maps only (too few to be split again)
        with tempfile.TemporaryDirectory() as tmp:
            for path in split_label_maps(args.labelmaps)[1]:
                (Path(tmp) / path.name).symlink_to(path.resolve())
            maps = load_label_maps(tmp, shape)
    source = SynthPairs(maps, seed=args.seed, max_disp=args.max_disp)

    def score(disp, item) -> float:
        w = warp(item["moving_labels"][None].float(), disp, mode="nearest")[0, 0].long().numpy()
        fl, ml = item["fixed_labels"][0].numpy(), item["moving_labels"][0].numpy()
        common = sorted((set(np.unique(fl).tolist()) & set(np.unique(ml).tolist())) - {0})
        return float(np.nanmean(list(dice(w, fl, labels=common).values())))

    res: dict[str, list[float]] = {
        "identity": [],
        "student": [],
        "teacher": [],
        "epe": [],
        "teacher_sdlogj": [],
    }
    for i in range(args.synth_pairs):
        item = source.pair(i)
        f, m = item["fixed"][None], item["moving"][None]
        ds, dt = student(f, m), teacher_field(f, m)
        res["identity"].append(score(torch.zeros_like(ds), item))
        res["student"].append(score(ds, item))
        res["teacher"].append(score(dt, item))
        res["epe"].append(float((ds - dt).norm(dim=1).mean()))
        res["teacher_sdlogj"].append(sdlogj(jacobian_det(dt)[0, 0].numpy()))
    print(
        f"\npart 2: {args.synth_pairs} training-style pairs from {args.maps} "
        f"({len(maps)} maps), seed {args.seed}"
    )
    print(
        "| identity Dice | student Dice | teacher Dice | student-teacher EPE (voxels) | "
        "teacher SDlogJ |"
    )
    print("|---|---|---|---|---|")
    print(" | ".join(f"{np.mean(v):.3f}" for v in res.values()).join(["| ", " |"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
