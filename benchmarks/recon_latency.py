"""Student vs teacher CPU latency per slice for KD-MRI checkpoints, measured so that a machine
whose speed drifts cannot decide the answer (issue 14: student <= 0.5x the teacher's time).

Both networks run on the same slice (batch 1, default 256x256) in alternation, ``pairs`` times
(each goes first in half the pairs, after two warm-up calls each); every pair gives one ratio
student / teacher measured milliseconds apart. Printed: the median milliseconds of each network, and
the median and 10th-90th percentiles of the per-pair ratio, for the frozen engine
(``ReconModel.run``'s default: traced, frozen, convolutions fused with their ReLUs) and eagerly.
Several rounds, one after the other, show how much the answer moves on this machine.

Usage (from the repository root, nothing else running on the machine):

    OMP_NUM_THREADS=2 python benchmarks/recon_latency.py TEACHER.pt STUDENT.pt
        [--size 256] [--pairs 30] [--rounds 3] [--threads 2] [--out results.json]

Any two recon checkpoints of one kind (DC-CNN or VDSR) are accepted: only their networks and
masks matter (the weights do not change the arithmetic).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", type=Path, help="the reference checkpoint (model.pt)")
    parser.add_argument("student", type=Path, help="the compared checkpoint (model.pt)")
    parser.add_argument("--size", type=int, default=256, help="slice side")
    parser.add_argument("--pairs", type=int, default=30, help="alternating pairs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per engine")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    from medistill.errors import InputError
    from medistill.recon.inference import paired_latency
    from medistill.recon.model import load_model

    try:
        teacher, student = load_model(args.teacher), load_model(args.student)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if teacher.is_sr != student.is_sr:
        print("error: the checkpoints are of different kinds (DC-CNN, VDSR)", file=sys.stderr)
        return 2
    engines = {
        "frozen": (teacher, student),
        "eager": (teacher.with_engine("eager"), student.with_engine("eager")),
    }
    rows = []
    print("| round | engine | teacher ms | student ms | ratio: median (10-90 %) |")
    print("|---|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        for engine, (t, s) in engines.items():
            p = paired_latency(t, s, args.size, pairs=args.pairs, threads=args.threads)
            rows.append({"round": r, "engine": engine, **p})
            print(
                f"| {r} | {engine} | {p['reference_ms']:.1f} | {p['model_ms']:.1f} | "
                f"{p['ratio_median']:.2f} ({p['ratio_p10']:.2f}-{p['ratio_p90']:.2f}) |",
                flush=True,
            )
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2
            )
        )
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
