"""Optimisation teacher vs ANTs on the held-out brain pairs (issue 10): one table, same pairs, same
thread count.

The pairs are made once by :func:`medistill.data.make_heldout_pairs` from the held-out label maps
of :func:`medistill.data.split_label_maps` (``training_seg_16..20`` of ../shared/data/labelmaps:
skull-stripped synthetic images at 2 mm, each with its own random rigid world offset; 20 ordered
pairs) and cached in ``DATA/CONTRAST`` (rebuilt when the cached parameters differ).

Rows (``--only`` picks some; names are case-insensitive, spaces or dashes alike):

- ``identity``: moving labels resampled onto the fixed grid through world space (nearest);
- ``ANTs affine``, ``ANTs SyN``: ``ants.registration`` with the antspyx defaults of
  ``type_of_transform='Affine'`` / ``'SyN'``, moving labels warped with ``genericLabel``; the
  Jacobian is the SyN warp's (``ants.create_jacobian_determinant_image``) times the affine's
  constant determinant. Skipped with a note when ``import ants`` fails (``pip install
  medistill[ants]``);
- ``optimiser``: :func:`medistill.optimise.register_optimise` (config
  ``medistill.optimise.OptimiseConfig``, ``--set key=value`` overrides). Skipped with a note when
  ``medistill.optimise`` cannot be imported.

Metrics per pair on the fixed grid: Dice averaged over every structure present in both label maps
(their number is reported), HD95 in mm (mean over those structures with a finite value, as
``medistill evaluate`` does), SDlogJ and folding % of the transform's Jacobian determinant over the
whole fixed grid (the convention of :func:`medistill.registration.evaluate.pair_metrics`; the
in-brain values are in the CSV as ``sdlogj_brain`` / ``folding_pct_brain``), and seconds per pair:
in-process time without file I/O (for ANTs: ``ants.registration`` plus ``apply_transforms``, the
images already read as ants images; ANTs itself writes its transforms to a temporary folder).

Usage (from the repository root):

    OMP_NUM_THREADS=2 python benchmarks/optimise_heldout.py --data runs/heldout_pairs \\
        --contrast t1 --threads 2 --out runs/optimise_heldout [--only identity "ANTs SyN"] \\
        [--pairs N] [--set optim.iterations=100 ...] [--name optimiser-fast] \\
        [--model NAME=CKPT ...] [--paired "ANTs SyN:optimiser" ...]

Writes ``OUT/metrics.csv`` (one line per row and pair) and ``OUT/summary.json`` (mean and sd per
row, the command and settings) atomically after every row, and prints the table (mean +- sd).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELMAPS = (ROOT / ".." / "shared" / "data" / "labelmaps").resolve()
ROWS = ("identity", "ANTs affine", "ANTs SyN", "optimiser")
TABLE_KEYS = ("dice", "structures", "hd95", "sdlogj", "folding_pct", "seconds")


def _stem(name: str) -> str:
    return name.removesuffix(".gz").removesuffix(".nii")


def _key(name: str) -> str:
    return name.lower().replace(" ", "-").replace("_", "-")


# ----------------------------------------------------------------------------- data
def prepare_pairs(args: argparse.Namespace) -> Path:
    """The cached held-out pairs for the arguments (built when missing or different)."""
    import json

    from medistill.data import make_heldout_pairs

    folder = args.data / args.contrast
    manifest = folder / "heldout.json"
    wanted = {"contrast": args.contrast, "spacing": args.spacing, "seed": args.seed}
    if (folder / "pairs.csv").is_file() and manifest.is_file():
        cached = json.loads(manifest.read_text())
        if all(cached.get(k) == v for k, v in wanted.items()) and len(cached["subjects"]) == 5:
            print(f"held-out pairs: {folder} (cached)")
            return folder / "pairs.csv"
    print(f"held-out pairs: building {folder} from {args.labelmaps} ...", flush=True)
    start = time.perf_counter()
    path = make_heldout_pairs(
        args.labelmaps, folder, contrast=args.contrast, spacing=args.spacing, seed=args.seed
    )
    print(f"held-out pairs: built in {time.perf_counter() - start:.0f} s")
    return path


# ----------------------------------------------------------------------------- metrics
def pair_metrics(
    warped_labels: np.ndarray,
    fixed_labels: np.ndarray,
    moving_labels: np.ndarray,
    jacobian: np.ndarray,
    spacing: tuple[float, ...],
) -> dict[str, float]:
    """Dice / HD95 over the structures in both maps, SDlogJ / folding % of ``jacobian``.

    Args:
        warped_labels: moving labels on the fixed grid ``(X, Y, Z)`` (integers).
        fixed_labels: fixed labels ``(X, Y, Z)``.
        moving_labels: moving labels on their own grid (only their values are used).
        jacobian: Jacobian determinant on the fixed grid ``(X, Y, Z)``.
        spacing: fixed voxel size in mm per array axis.
    """
    from medistill.metrics import dice, folding_fraction, hd95, sdlogj

    common = sorted(
        (set(np.unique(fixed_labels).tolist()) & set(np.unique(moving_labels).tolist())) - {0}
    )
    d = dice(warped_labels, fixed_labels, labels=common)
    h = list(hd95(warped_labels, fixed_labels, labels=common, spacing=spacing).values())
    finite = [v for v in h if np.isfinite(v)]
    brain = fixed_labels != 0
    return {
        "dice": float(np.nanmean(list(d.values()))),
        "structures": len(common),
        "hd95": float(np.mean(finite)) if finite else float("nan"),
        "hd95_missing": len(h) - len(finite),
        "sdlogj": sdlogj(jacobian),
        "folding_pct": 100.0 * folding_fraction(jacobian),
        "sdlogj_brain": sdlogj(jacobian, brain),
        "folding_pct_brain": 100.0 * folding_fraction(jacobian, brain),
    }


# ----------------------------------------------------------------------------- rows
Runner = Callable[[int, int], tuple[np.ndarray, np.ndarray, float]]
"""(fixed index, moving index) -> (warped labels, Jacobian on the fixed grid, seconds)."""


def identity_runner(subjects: list) -> Runner:
    from medistill.io import resample_array

    def run(f: int, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        fixed, moving = subjects[f], subjects[m]
        start = time.perf_counter()
        warped = resample_array(
            moving.labels.data, moving.labels.affine, fixed.image.affine, fixed.image.shape, order=0
        )
        seconds = time.perf_counter() - start
        return warped, np.ones(fixed.image.shape, np.float32), seconds

    return run


def ants_runner(sources: list, kind: str, seed: int) -> Runner:
    """ANTs with antspyx defaults of ``type_of_transform=kind`` (images read before timing)."""
    import ants

    if hasattr(ants, "config") and hasattr(ants.config, "_random_seed"):
        ants.config._random_seed = seed  # ANTs' --random-seed (metric sampling); threads unchanged
    images = [ants.image_read(str(s.image)) for s in sources]
    labels = [ants.image_read(str(s.labels)) for s in sources]

    def affine_det(path: str) -> float:
        params = np.asarray(ants.read_transform(path).parameters, dtype=np.float64)
        return float(np.linalg.det(params[:9].reshape(3, 3)))

    def run(f: int, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        with tempfile.TemporaryDirectory(prefix="ants_") as tmp:
            start = time.perf_counter()
            reg = ants.registration(
                images[f], images[m], type_of_transform=kind, outprefix=f"{tmp}/"
            )
            warped = ants.apply_transforms(
                images[f], labels[m], reg["fwdtransforms"], interpolator="genericLabel"
            )
            seconds = time.perf_counter() - start
            tx = reg["fwdtransforms"]
            affines = [p for p in tx if p.endswith(".mat")]
            det = np.prod([affine_det(p) for p in affines]) if affines else 1.0
            warps = [p for p in tx if p.endswith((".nii", ".nii.gz")) and "Inverse" not in p]
            jac = np.full(images[f].shape, det, np.float32)
            if warps:
                # point map fixed -> warp -> affine -> moving: det = det(J_warp) * det(affine)
                jw = ants.create_jacobian_determinant_image(images[f], warps[0], do_log=False)
                jac = jw.numpy().astype(np.float32) * np.float32(det)
        return np.rint(warped.numpy()).astype(np.int32), jac, seconds

    return run


def optimiser_runner(subjects: list, overrides: list[str]) -> Runner:
    """The optimiser with its dataclass defaults (the ``brain`` preset) and ``overrides``."""
    from medistill.optimise import load_optimise_config
    from medistill.registration.methods import optimiser_registrar

    registrar = optimiser_registrar(load_optimise_config(None, overrides))

    def run(f: int, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        fixed, moving = subjects[f], subjects[m]
        reg = registrar(fixed.image, moving.image, moving_labels=moving.labels)
        return reg.warped_labels.data, np.asarray(reg.jacobian), float(reg.seconds_total)

    return run


def network_runner(
    subjects: list, checkpoint: Path, refine: int, level: int = 1, overrides: list[str] = ()
) -> Runner:
    """A registration checkpoint on native grids (``medistill register``'s pipeline), optionally
    refined by ``refine`` optimiser iterations (the ``refine`` preset with ``overrides``) at
    pyramid factor ``level`` of its working grid."""
    from medistill.optimise import load_optimise_config
    from medistill.registration.methods import network_registrar

    cfg = load_optimise_config("refine", list(overrides))
    registrar = network_registrar(checkpoint, refine=refine, refine_cfg=cfg, refine_level=level)[0]

    def run(f: int, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        fixed, moving = subjects[f], subjects[m]
        reg = registrar(fixed.image, moving.image, moving_labels=moving.labels)
        run.network_seconds = reg.seconds_network  # type: ignore[attr-defined]
        return reg.warped_labels.data, np.asarray(reg.jacobian), float(reg.seconds_total)

    return run


# ----------------------------------------------------------------------------- table
def fmt(mean: float, sd: float, digits: int) -> str:
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def print_table(summary: dict[str, dict]) -> None:
    head = "| row | pairs | Dice | structures | HD95 mm | SDlogJ | folding % | s/pair |"
    print(head)
    print("|---" * 8 + "|")
    for name, s in summary.items():
        cells = [
            fmt(*s["dice"], 3),
            f"{s['structures'][0]:.1f}",
            fmt(*s["hd95"], 2),
            fmt(*s["sdlogj"], 3),
            fmt(*s["folding_pct"], 3),
            fmt(*s["seconds"], 1),
        ]
        print(f"| {name} | {s['pairs']} | " + " | ".join(cells) + " |")


def paired_dice(rows: list[dict], a: str, b: str) -> str:
    """One line: the Dice of row ``a`` minus that of row ``b`` over the pairs both rows ran
    (mean +- sd, and on how many pairs ``a`` is above ``b``)."""
    dice = {name: {} for name in (a, b)}
    for r in rows:
        if r["row"] in dice:
            dice[r["row"]][(r["fixed"], r["moving"])] = r["dice"]
    common = [k for k in dice[a] if k in dice[b]]
    if not common:
        ran = sorted({r["row"] for r in rows})
        return f"paired {a} - {b}: no pairs in common (rows run: {ran})"
    diff = np.array([dice[a][k] - dice[b][k] for k in common])
    sd = diff.std(ddof=1) if diff.size > 1 else 0.0
    return (
        f"paired Dice {a} - {b}: {diff.mean():+.4f} +- {sd:.4f}"
        f" over {diff.size} pairs, {a} above on {int((diff > 0).sum())}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "heldout_pairs")
    parser.add_argument("--labelmaps", type=Path, default=LABELMAPS)
    parser.add_argument("--contrast", choices=("t1", "t2", "random"), default="t1")
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size of the pairs (mm)")
    parser.add_argument("--seed", type=int, default=0, help="pairs' seed (and ANTs' random seed)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ITK threads")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "optimise_heldout")
    parser.add_argument("--only", nargs="*", default=None, help=f"rows to run, of {ROWS}")
    parser.add_argument("--pairs", type=int, default=None, help="use only the first N pairs")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="optimiser config override"
    )
    parser.add_argument(
        "--refine-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="optimiser config override of the --refine rows (e.g. deformable.weight=3)",
    )
    parser.add_argument("--name", default="optimiser", help="table name of the optimiser row")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="a registration checkpoint row (repeat); with --refine also refined rows",
    )
    parser.add_argument(
        "--refine",
        default="",
        help="comma-separated optimiser iteration counts for --model rows; N@F runs N at "
        "pyramid factor F of the working grid (a coarse correction; default F=1)",
    )
    parser.add_argument(
        "--paired",
        action="append",
        default=[],
        metavar="A:B",
        help="print the paired Dice difference of row A minus row B (repeat)",
    )
    args = parser.parse_args()
    for item in args.paired:
        if item.count(":") != 1 or not all(item.split(":")):
            parser.error(f"--paired wants two row names as A:B, got {item!r}")

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from medistill.data import load_subject, read_pairs_csv
    from medistill.metrics import summarize
    from medistill.metrics.summary import write_metrics

    if not args.labelmaps.is_dir() and not (args.data / args.contrast / "pairs.csv").is_file():
        print(f"skipped: label maps not found at {args.labelmaps}")
        return 0
    wanted = {_key(r) for r in args.only} if args.only else {_key(r) for r in ROWS}
    unknown = wanted - {_key(r) for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows: {', '.join(ROWS)}")

    csv_path = prepare_pairs(args)
    sources, pairs = read_pairs_csv(csv_path)
    pairs = pairs[: args.pairs] if args.pairs else pairs
    subjects = [load_subject(s) for s in sources]
    shapes = sorted({s.image.shape for s in subjects})
    print(f"{len(pairs)} pairs of {len(subjects)} subjects, grids {shapes}, {args.threads} threads")

    builders: dict[str, Callable[[], Runner]] = {
        "identity": lambda: identity_runner(subjects),
        "ANTs affine": lambda: ants_runner(sources, "Affine", args.seed),
        "ANTs SyN": lambda: ants_runner(sources, "SyN", args.seed),
        args.name: lambda: optimiser_runner(subjects, args.set),
    }
    keys = dict(zip(builders, ROWS, strict=True))
    refines = [(0, 1)] + [
        (int(n.partition("@")[0]), int(n.partition("@")[2] or 1))
        for n in args.refine.split(",")
        if n.strip()
    ]
    for item in args.model:
        name, _, ckpt = item.partition("=")
        for n, level in refines:
            row = name if n == 0 else f"{name} +{n} refine" + (f" @1/{level}" if level > 1 else "")
            builders[row] = lambda c=Path(ckpt), n=n, f=level: network_runner(
                subjects, c, n, f, args.refine_set
            )
            keys[row] = row
            wanted.add(_key(row))
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    notes: list[str] = []
    for name, build in builders.items():
        if _key(keys[name]) not in wanted and _key(name) not in wanted:
            continue
        try:
            runner = build()
        except ImportError as err:
            note = f"{name}: skipped ({err})"
            print(note)
            notes.append(note)
            continue
        values: dict[str, list[float]] = {k: [] for k in TABLE_KEYS}
        for f, m in pairs:
            warped, jac, seconds = runner(f, m)
            fixed, moving = subjects[f], subjects[m]
            metrics = pair_metrics(
                warped, fixed.labels.data, moving.labels.data, jac, fixed.image.spacing
            )
            metrics["seconds"] = seconds
            if hasattr(runner, "network_seconds"):
                metrics["seconds_network"] = runner.network_seconds
            pair = {"fixed": _stem(fixed.name), "moving": _stem(moving.name)}
            rows.append({"row": name, **pair, **metrics})
            for k in TABLE_KEYS:
                values[k].append(metrics[k])
            print(
                f"  {name:<12} {pair['fixed']} <- {pair['moving']}: Dice {metrics['dice']:.3f} "
                f"({metrics['structures']}), HD95 {metrics['hd95']:.2f} mm, "
                f"SDlogJ {metrics['sdlogj']:.3f}, fold {metrics['folding_pct']:.3f} %, "
                f"{seconds:.1f} s",
                flush=True,
            )
        summary[name] = {"pairs": len(values["dice"])}
        summary[name].update({k: list(summarize(v)) for k, v in values.items()})
        write_metrics(
            args.out,
            rows,
            {
                "command": command,
                "threads": args.threads,
                "pairs_csv": str(csv_path),
                "optimiser_overrides": args.set,
                "refine_overrides": args.refine_set,
                "notes": notes,
                "rows": summary,
            },
        )
    print()
    print(f"$ {command}")
    print_table(summary)
    for item in args.paired:
        print(paired_dice(rows, *item.split(":")))
    for note in notes:
        print(f"note: {note}")
    print(f"written: {args.out / 'metrics.csv'}, {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    from medistill.errors import InputError

    try:
        sys.exit(main())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
