"""Paired PSNR differences between the runs of one ``recon_results.py`` group, per test volume.

    python benchmarks/recon_paired.py runs/recon_pooled/recon_4x [--eval eval ...]
        [--pair A:B ...]

Prints, for teacher - student, KD - student, teacher - KD, imitation - student, KD - the
equal-compute student (``student_2x``) and that student - student: the mean +- sd of the per-volume
PSNR difference (dB) and on how many volumes the first is higher. ``--pair A:B`` compares other
run folders of the group instead (e.g. those of ``recon_kd_tuning.py``, whose evaluations are
``eval_val``, ``eval_test`` and ``eval_test_inverted``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

PAIRS = (
    ("teacher", "student"),
    ("kd", "student"),
    ("teacher", "kd"),
    ("imitation", "student"),
    ("kd", "student_2x"),  # KD against the plain student given KD's total steps
    ("student_2x", "student"),
)


def psnr_by_volume(path: Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {row["volume"]: float(row["psnr"]) for row in csv.DictReader(fh)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", type=Path, help="e.g. runs/recon_pooled/recon_4x")
    parser.add_argument("--eval", nargs="*", default=["eval", "eval_inverted contrast"])
    parser.add_argument("--pair", action="append", default=[], help="A:B, run folders")
    args = parser.parse_args()
    pairs = [tuple(p.split(":", 1)) for p in args.pair] if args.pair else PAIRS
    for name in args.eval:
        print(f"{args.group.name} / {name}")
        for a, b in pairs:
            pa, pb = args.group / a / name / "metrics.csv", args.group / b / name / "metrics.csv"
            if not (pa.exists() and pb.exists()):
                continue
            x, y = psnr_by_volume(pa), psnr_by_volume(pb)
            d = np.array([x[v] - y[v] for v in sorted(x)])
            print(
                f"  {a} - {b}: {d.mean():+.3f} +- {d.std(ddof=1):.3f} dB, "
                f"{int((d > 0).sum())} of {len(d)} volumes higher"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
