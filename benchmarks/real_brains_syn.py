"""ANTs SyN on the 6 real-brain pairs of ``runs/real_brains/pairs.csv``, scored like
``medistill evaluate`` (Dice over the fixed map's labels, HD95, folding, SDlogJ, seconds).

Usage (after ``registration_results.prepare_eval(Path("runs/real_brains"))``, see
docs/RESULTS.md): ``OMP_NUM_THREADS=2 python benchmarks/real_brains_syn.py`` (needs antspyx;
2 ITK threads).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main() -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "2"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from optimise_heldout import ants_runner

    from medistill.data import load_subject, read_pairs_csv
    from medistill.metrics import dice, folding_fraction, hd95, sdlogj
    from medistill.metrics.summary import nanmean

    sources, pairs = read_pairs_csv("runs/real_brains/pairs.csv")
    subjects = [load_subject(s) for s in sources]
    run = ants_runner(sources, "SyN", 0)
    rows = []
    for f, m in pairs:
        warped, jac, seconds = run(f, m)
        target = subjects[f].labels.data
        spacing = subjects[f].image.spacing
        h = [v for v in hd95(warped, target, spacing=spacing).values() if np.isfinite(v)]
        rows.append(
            {
                "dice": nanmean(dice(warped, target)),
                "hd95": float(np.mean(h)),
                "folding_pct": 100 * folding_fraction(jac),
                "sdlogj": sdlogj(jac),
                "seconds": seconds,
            }
        )
        print(rows[-1], flush=True)
    summary = {
        k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows], ddof=1)))
        for k in rows[0]
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
