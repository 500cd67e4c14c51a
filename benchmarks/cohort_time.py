"""Per-pair time of a cohort run (issue 13): ``medistill register --pairs`` on N pairs, wall clock
of the whole command (interpreter start, imports, model load, every pair's reading, registration
and writing) divided by N, for several output settings, in one run.

The pairs are the held-out brain pairs of ``benchmarks/optimise_heldout.py`` (``DATA/t1`` and
``DATA/random``: 2 mm, about 71 x 76 x 101 voxels, 40 distinct ordered pairs), repeated in order
until there are ``--pairs`` rows (a repeated pair gets its own output folder). Each setting runs
into a fresh output folder. The command's own "s per pair" (registration in process, no file
I/O) is reported next to the wall time; with several ``--workers`` (the default on a CPU with 2
or more threads and 8 or more pairs: one process per thread, at most 4) it is each worker's time
per pair on its share of the threads, so it exceeds the wall time per pair. The last two
settings run in one process with every thread (``--workers 1``), the code path before workers
existed.

Usage (from the repository root; run it on an idle machine):

    OMP_NUM_THREADS=2 python benchmarks/cohort_time.py --data runs/heldout_pairs \\
        --out runs/cohort_time [--pairs 100] [--model brain]

Prints a markdown table and writes ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "all outputs, .nii.gz (default)": [],
    "all outputs, .nii": ["--no-compress"],
    "warped, warped_labels, disp_mm, .nii.gz": ["--outputs", "warped,warped_labels,disp_mm"],
    "warped_labels, .nii.gz": ["--outputs", "warped_labels"],
    "all outputs, .nii.gz, one process (--workers 1)": ["--workers", "1"],
    "warped_labels, .nii.gz, one process (--workers 1)": [
        "--outputs", "warped_labels", "--workers", "1",
    ],
}  # fmt: skip


def cohort_csv(data: Path, n: int, path: Path) -> None:
    """``n`` rows of absolute pair paths from ``data/t1`` and ``data/random``, repeated."""
    rows = []
    for contrast in ("t1", "random"):
        folder = data / contrast
        with open(folder / "pairs.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({k: str((folder / v).resolve()) for k, v in row.items() if v})
    if not rows:
        sys.exit(f"{data}: no pairs.csv under t1/ or random/ (run optimise_heldout.py first)")
    rows = [rows[i % len(rows)] for i in range(n)]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["fixed", "moving", "moving_labels"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("fixed", "moving", "moving_labels")} for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("runs/heldout_pairs"))
    parser.add_argument("--out", type=Path, default=Path("runs/cohort_time"))
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--model", default="brain")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "pairs.csv"
    cohort_csv(args.data, args.pairs, table)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    results = []
    for name, extra in SETTINGS.items():
        target = args.out / "cohort"
        shutil.rmtree(target, ignore_errors=True)
        cmd = [sys.executable, "-m", "medistill.cli.main", "register", "--model", args.model,
               "--pairs", str(table), "--out", str(target), *extra]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{name}: failed: {done.stderr.strip()[-500:]}")
        found = re.search(r"([0-9.]+) s per pair", done.stdout)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        results.append(
            {
                "setting": name,
                "args": extra,
                "pairs": args.pairs,
                "wall_s": wall,
                "wall_s_per_pair": wall / args.pairs,
                "in_process_s_per_pair": float(found.group(1)) if found else None,
                "mb_per_pair": size / args.pairs / 1e6,
            }
        )
        shutil.rmtree(target, ignore_errors=True)
        print(f"{name}: {wall / args.pairs:.3f} s per pair", flush=True)
    summary = {
        "command": " ".join(sys.argv),
        "threads": env["OMP_NUM_THREADS"],
        "model": args.model,
        "results": results,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{args.pairs}-pair cohort, model {args.model}, {env['OMP_NUM_THREADS']} threads\n")
    print("| outputs | wall s per pair | in-process s per pair | MB per pair |")
    print("|---|---|---|---|")
    for r in results:
        inner = f"{r['in_process_s_per_pair']:.3f}" if r["in_process_s_per_pair"] else "-"
        print(f"| {r['setting']} | {r['wall_s_per_pair']:.3f} | {inner} | {r['mb_per_pair']:.1f} |")


if __name__ == "__main__":
    main()
