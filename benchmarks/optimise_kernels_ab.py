"""The optimiser's kernels now vs before 2026-11-30, alternated pair by pair in one process on
the held-out pairs: LNCC's local means by separable box sums (before: 3-D average pooling) and
the pyramid's Gaussian blur as weighted sums of shifted views (before: one single-channel
``conv3d`` per axis).

Rows: the optimiser with the ``brain`` preset (``register_optimise``, end to end without file
I/O) and, with ``--model``, that network plus ``--refine`` optimiser iterations at its working
resolution. For each, seconds per pair and Dice (every structure present in both maps) with
either set of kernels; the two must agree up to float rounding amplified by Adam.

Usage (from the repository root; make the pairs first with ``benchmarks/optimise_heldout.py``):

    OMP_NUM_THREADS=2 python benchmarks/optimise_kernels_ab.py \\
        --data runs/heldout_pairs/t1/pairs.csv \\
        [--pairs 10] [--model runs/gpu1/student/model.pt --refine 20]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimise_heldout import pair_metrics  # noqa: E402

from medistill.optimise import core, similarity  # noqa: E402


def pooled_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """The former local mean: 3-D (2-D) average pooling, zero padding not counted."""
    pool = F.avg_pool3d if x.dim() == 5 else F.avg_pool2d
    return pool(x, window, stride=1, padding=window // 2, count_include_pad=False)


def conv_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The former Gaussian blur: one single-channel convolution per axis, replicate padding."""
    nd = x.dim() - 2
    conv = F.conv3d if nd == 3 else F.conv2d
    out = x.reshape(-1, 1, *x.shape[2:])
    for axis in range(nd):
        radius = min(int(math.ceil(3.0 * sigma)), x.shape[2 + axis] - 1)
        if sigma <= 0 or radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = k.numel()
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), (k / k.sum()).view(shape))
    return out.reshape(x.shape)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("runs/heldout_pairs/t1/pairs.csv"))
    parser.add_argument("--pairs", type=int, default=10, help="use the first N pairs")
    parser.add_argument("--model", type=Path, default=None, help="a registration checkpoint")
    parser.add_argument("--refine", type=int, default=20, help="refinement iterations (--model)")
    parser.add_argument(
        "--refine-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the refinement's `refine` preset (the rows of 2026-11-30 in "
        "docs/RESULTS.md ran with deformable.weight=1, the default then)",
    )
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (make it with benchmarks/optimise_heldout.py)")
        return 0
    from medistill.data import load_subject, read_pairs_csv
    from medistill.optimise import load_optimise_config
    from medistill.registration.methods import network_registrar, optimiser_registrar

    sources, pairs = read_pairs_csv(args.data)
    pairs = pairs[: args.pairs]
    subjects = [load_subject(s) for s in sources]
    rows = {"optimiser (brain)": optimiser_registrar(load_optimise_config(None, []))}
    if args.model is not None:
        refine_cfg = load_optimise_config("refine", args.refine_set)
        rows[f"network + {args.refine} refine"] = network_registrar(
            args.model, refine=args.refine, refine_cfg=refine_cfg
        )[0]
    kernels = {
        "now": (similarity._box, core.gaussian_blur),
        "before": (pooled_mean, conv_blur),
    }
    print(f"{len(pairs)} pairs, {torch.get_num_threads()} threads")
    print("| row | kernels | Dice | s/pair (median) |")
    print("|---|---|---|---|")
    for name, registrar in rows.items():
        results: dict[str, dict[str, list[float]]] = {k: {"dice": [], "s": []} for k in kernels}
        registrar(subjects[pairs[0][0]].image, subjects[pairs[0][1]].image)  # warm-up
        for f, m in pairs:
            for kernel, (box, blur) in kernels.items():
                similarity._box, core.gaussian_blur = box, blur
                fixed, moving = subjects[f], subjects[m]
                t = time.perf_counter()
                reg = registrar(fixed.image, moving.image, moving_labels=moving.labels)
                results[kernel]["s"].append(time.perf_counter() - t)
                metrics = pair_metrics(
                    reg.warped_labels.data,
                    fixed.labels.data,
                    moving.labels.data,
                    np.asarray(reg.jacobian),
                    fixed.image.spacing,
                )
                results[kernel]["dice"].append(metrics["dice"])
        similarity._box, core.gaussian_blur = kernels["now"]
        for kernel, r in results.items():
            print(
                f"| {name} | {kernel} | {np.mean(r['dice']):.4f} | "
                f"{statistics.median(r['s']):.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
