"""The optimiser on a GPU against the CPU, on the same held-out pairs: equal results, time per pair.

For each pair of ``PAIRS_CSV`` (made by ``benchmarks/optimise_heldout.py``):
``medistill.optimise.register_optimise`` with ``device=cpu`` and ``device=cuda`` (same settings),
the Dice of the warped labels over the structures present in both maps, seconds per pair
(end to end in-process), and the largest difference of the two displacement fields (voxels).
Then the batched core (:func:`medistill.optimise.optimise`) on ``--batch`` copies of the first
pair's working-grid images, to show the time per pair when pairs are optimised together (the way
the teacher-flow cache runs on a GPU).

Usage (on a machine with a CUDA GPU; ``--cpu-pairs 0`` skips the CPU runs):

    python benchmarks/optimise_device.py --pairs runs/heldout_pairs/t1/pairs.csv \\
        --out runs/optimise_device.json [--config brain] [--threads 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medistill.data import load_subject, read_pairs_csv
from medistill.io.atomic import atomic_path
from medistill.metrics import dice
from medistill.optimise import OptimiseConfig, optimise, presets, register_optimise
from medistill.optimise.apply import optimiser_grid
from medistill.spatial.native import prepare_pair
from medistill.train import load_config


def _dice(reg, fixed_labels) -> float:
    pred, target = reg.warped_labels.data, fixed_labels.data
    shared = sorted((set(np.unique(pred)) & set(np.unique(target))) - {0})
    return float(np.mean(list(dice(pred, target, labels=shared).values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", default="brain")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the CPU runs")
    parser.add_argument("--cpu-pairs", type=int, default=3, help="pairs also run on the CPU")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sources, pairs = read_pairs_csv(args.pairs, required=("fixed", "moving"))
    cfg = load_config(OptimiseConfig, args.config, presets=presets())
    devices = ["cuda"] if torch.cuda.is_available() else []
    rows = []
    for k, (fi, mi) in enumerate(pairs):
        fixed, moving = load_subject(sources[fi]), load_subject(sources[mi])
        row = {"fixed": fixed.name, "moving": moving.name}
        fields = {}
        for device in (["cpu"] if k < args.cpu_pairs else []) + devices:
            cfg.device = device
            if device == "cuda":  # warm-up (kernels, allocator) outside the timing
                register_optimise(fixed.image, moving.image, cfg)
            t0 = time.perf_counter()
            reg = register_optimise(fixed.image, moving.image, cfg, moving_labels=moving.labels)
            row[f"seconds_{device}"] = time.perf_counter() - t0
            row[f"dice_{device}"] = _dice(reg, fixed.labels)
            fields[device] = reg.disp_voxel
        if len(fields) == 2:
            row["max_field_difference_voxels"] = float(np.abs(fields["cpu"] - fields["cuda"]).max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    batch = {}
    if devices:
        first = load_subject(sources[pairs[0][0]]), load_subject(sources[pairs[0][1]])
        cfg.device = "cuda"
        pair = prepare_pair(first[0].image, first[1].image, optimiser_grid(first[0].image, cfg))
        for b in (1, args.batch):
            f = pair.fixed.expand(b, -1, -1, -1, -1).cuda()
            m = pair.moving.expand(b, -1, -1, -1, -1).cuda()
            optimise(f, m, cfg)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            optimise(f, m, cfg)
            torch.cuda.synchronize()
            batch[str(b)] = (time.perf_counter() - t0) / b
        print("batched seconds per pair:", batch, flush=True)
    summary = {
        "device": torch.cuda.get_device_name(0) if devices else "none",
        "config": args.config,
        "cpu_threads": args.threads,
        "rows": rows,
        "batched_seconds_per_pair_cuda": batch,
    }
    for key in ("dice_cpu", "dice_cuda", "seconds_cpu", "seconds_cuda"):
        values = [r[key] for r in rows if key in r]
        if values:
            summary[key + "_mean"] = float(np.mean(values))
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
