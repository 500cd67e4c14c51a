"""``medistill demo``: the whole registration-by-distillation story on the embedded data.

The teacher is the per-pair optimiser (``distill.teacher=optimise``: no training, strong on a
CPU; with ``distill.teacher`` a checkpoint path or ``network``, a small RCN is trained instead as
before). Its fields over the training pairs fill the teacher-flow cache; three students are
trained (no distillation, L1 flow distillation, ALDK); teacher, students and, when antspyx is
installed, ANTs SyN are evaluated on held-out embedded subjects with seconds per pair measured in
the same run; ``report.html`` shows the table, figures and the speed ratios. Checkpoints:
``student.pt``, ``student_l1.pt``, ``student_aldk.pt`` (and ``teacher.pt`` for a network teacher).
"""

from __future__ import annotations

import copy
import csv
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medistill.metrics.summary import nanmean, per_label_means, write_summary
from medistill.registration.config import RegistrationConfig, presets
from medistill.report import Stopwatch
from medistill.train import load_config

log = logging.getLogger(__name__)

STUDENTS = {"none": "student.pt", "l1": "student_l1.pt", "aldk": "student_aldk.pt"}


def write_heldout(folder: Path, cfg: RegistrationConfig, n: int) -> Path:
    """Held-out embedded subjects (test split) as NIfTI and a CSV of all their ordered pairs."""
    from medistill.data import all_ordered_pairs, embedded_subjects
    from medistill.io import save

    folder.mkdir(parents=True, exist_ok=True)
    subjects = embedded_subjects(n, shape=tuple(cfg.data.shape), seed=cfg.data.seed, split="test")
    names = []
    for i, (image, labels) in enumerate(subjects):
        save(image, folder / f"test{i}.nii.gz")
        save(labels, folder / f"test{i}_seg.nii.gz")
        names.append(f"test{i}")
    lines = ["fixed,moving,fixed_labels,moving_labels"]
    for f, m in all_ordered_pairs(n):
        a, b = names[f], names[m]
        lines.append(f"{a}.nii.gz,{b}.nii.gz,{a}_seg.nii.gz,{b}_seg.nii.gz")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


def _identity_row(csv_path: Path) -> dict[str, Any]:
    """Metrics before registration (moving labels scored against fixed labels as they are)."""
    from medistill.data import read_pairs_csv
    from medistill.io import load
    from medistill.metrics import dice, hd95

    sources, pairs = read_pairs_csv(csv_path)
    rows = []
    for fi, mi in pairs:
        fixed = load(sources[fi].labels, is_label=True)
        f = fixed.data
        m = load(sources[mi].labels, is_label=True).data
        d = dice(m, f)
        row = {"dice": nanmean(d), "hd95": nanmean(hd95(m, f, spacing=fixed.spacing))}
        rows.append({**row, **{f"dice_{k}": v for k, v in d.items()}})
    return {
        "model": "no registration",
        "dice_mean": nanmean([r["dice"] for r in rows]),
        "hd95_mean": nanmean([r["hd95"] for r in rows]),
        "folding_pct": 0.0,
        "dice_per_label": per_label_means(rows),
    }


def _ants_row(csv_path: Path) -> dict[str, Any] | None:
    """ANTs SyN (antspyx defaults, 2 threads) on the held-out pairs, or None without antspyx."""
    import os
    import tempfile
    import time

    try:
        import ants
    except ImportError:
        return None
    from medistill.data import read_pairs_csv
    from medistill.metrics import dice, hd95

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
    sources, pairs = read_pairs_csv(csv_path)
    rows = []
    for fi, mi in pairs:
        f, m = ants.image_read(str(sources[fi].image)), ants.image_read(str(sources[mi].image))
        fl = ants.image_read(str(sources[fi].labels))
        ml = ants.image_read(str(sources[mi].labels))
        with tempfile.TemporaryDirectory(prefix="medistill_ants_") as tmp:
            start = time.perf_counter()
            reg = ants.registration(f, m, type_of_transform="SyN", outprefix=f"{tmp}/")
            warped = ants.apply_transforms(f, ml, reg["fwdtransforms"], interpolator="genericLabel")
            seconds = time.perf_counter() - start
        pred, target = np.rint(warped.numpy()).astype(int), np.rint(fl.numpy()).astype(int)
        d = dice(pred, target)
        row = {"dice": nanmean(d), "hd95": nanmean(hd95(pred, target, spacing=fl.spacing))}
        rows.append({**row, "seconds": seconds, **{f"dice_{k}": v for k, v in d.items()}})
    return {
        "model": "ANTs SyN",
        "dice_mean": nanmean([r["dice"] for r in rows]),
        "hd95_mean": nanmean([r["hd95"] for r in rows]),
        "seconds_per_pair": float(np.mean([r["seconds"] for r in rows])),
        "dice_per_label": per_label_means(rows),
    }


def run_demo(
    out: Path, *, config: str = "demo", overrides: list[str] | None = None, n_test: int = 4
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``."""
    from medistill.registration.evaluate import evaluate, evaluate_pairs
    from medistill.registration.training import train

    watch = Stopwatch()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(RegistrationConfig, config, presets=presets(), overrides=overrides or [])
    runs = out / "runs"
    teacher = cfg.distill.teacher or "optimise"
    if teacher == "network":
        with watch.stage("train teacher"):
            train("teacher", cfg, runs / "teacher", resume=(runs / "teacher" / "last.pt").exists())
            shutil.copyfile(runs / "teacher" / "model.pt", out / "teacher.pt")
        teacher = str(out / "teacher.pt")

    for mode, name in STUDENTS.items():
        with watch.stage(f"train student ({mode})"):
            scfg = copy.deepcopy(cfg)
            scfg.distill.mode = mode
            scfg.distill.teacher = teacher
            scfg.distill.cache = str(out / "flow_cache")
            run = runs / f"student_{mode}"
            train("student", scfg, run, resume=(run / "last.pt").exists())
            shutil.copyfile(run / "model.pt", out / name)

    checkpoints = {
        "student (no KD)": out / "student.pt",
        "student + L1 KD": out / "student_l1.pt",
        "student + ALDK": out / "student_aldk.pt",
    }
    if teacher not in ("optimise", "ants"):
        checkpoints = {"teacher": Path(teacher), **checkpoints}
    with watch.stage("evaluate"):
        pairs_csv = write_heldout(out / "heldout", cfg, n_test)
        rows = [_identity_row(pairs_csv)]
        if teacher == "optimise":
            registrar = _optimiser_registrar(cfg)
            summary = evaluate_pairs(
                registrar, pairs_csv, out / "eval" / "optimiser", meta={"role": "optimiser"}
            )
            with (out / "eval" / "optimiser" / "metrics.csv").open() as f:
                per_label = per_label_means(list(csv.DictReader(f)))
            rows.append({"model": "teacher: optimiser", **summary, "dice_per_label": per_label})
        for label, ckpt in checkpoints.items():
            summary = evaluate(ckpt, pairs_csv, out / "eval" / ckpt.stem)
            with (out / "eval" / ckpt.stem / "metrics.csv").open() as f:
                per_label = per_label_means(list(csv.DictReader(f)))
            rows.append({"model": label, **summary, "dice_per_label": per_label})
    with watch.stage("ANTs SyN"):
        syn = _ants_row(pairs_csv)
        if syn is not None:
            rows.insert(1, syn)

    with watch.stage("latency"):
        latency = _latency(checkpoints, cfg)
    summary = {
        "rows": rows,
        "latency": latency,
        "speed": _speed(rows),
        "teacher": teacher if teacher in ("optimise", "ants") else "network",
        "timings_s": watch.total(),
        "config": config,
        "overrides": overrides or [],
    }
    write_summary(out / "summary.json", summary)
    from medistill.registration.demo_report import write_demo_report

    write_demo_report(out, summary, pairs_csv, checkpoints, cfg)
    return summary


def _optimiser_registrar(cfg: RegistrationConfig):
    """The demo teacher's optimiser (``distill.teacher_config`` / ``teacher_set``) as a
    registrar for :func:`~medistill.registration.evaluate.evaluate_pairs`."""
    from medistill.optimise import load_optimise_config
    from medistill.registration.methods import optimiser_registrar

    return optimiser_registrar(
        load_optimise_config(cfg.distill.teacher_config, cfg.distill.teacher_set)
    )


def _speed(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per pair of each row that measured it (end to end, in-process, no file I/O)."""
    seconds = {r["model"]: r["seconds_per_pair"] for r in rows if r.get("seconds_per_pair")}
    return {name: float(s) for name, s in seconds.items()}


def _latency(checkpoints: dict[str, Path], cfg: RegistrationConfig) -> dict[str, Any]:
    """Network forward latency at the working size: the network teacher (if any) and the
    student, same inputs and threads."""
    from medistill.registration.bench import latency_table
    from medistill.registration.model import load_model

    keep = {}
    if "teacher" in checkpoints:
        keep["teacher"] = load_model(checkpoints["teacher"])[0]
    keep["student"] = load_model(checkpoints["student + ALDK"])[0]
    table = latency_table(keep, [int(cfg.data.shape[0])], threads=2, repeats=5)
    return {name: {str(k): v for k, v in row.items()} for name, row in table.items()}
