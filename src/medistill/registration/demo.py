"""``medistill demo``: the whole registration-by-distillation story on the embedded data.

Trains a small teacher, builds the teacher-flow cache, distils three students (no distillation,
L1 flow distillation, ALDK), evaluates all of them on held-out embedded subjects, measures CPU
latency in one run, and writes ``report.html`` with the checkpoints ``teacher.pt``, ``student.pt``,
``student_l1.pt`` and ``student_aldk.pt``.
"""

from __future__ import annotations

import copy
import csv
import logging
import shutil
from pathlib import Path
from typing import Any

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


def run_demo(
    out: Path, *, config: str = "demo", overrides: list[str] | None = None, n_test: int = 4
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``."""
    from medistill.registration.evaluate import evaluate
    from medistill.registration.training import train

    watch = Stopwatch()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(RegistrationConfig, config, presets=presets(), overrides=overrides or [])
    runs = out / "runs"

    with watch.stage("train teacher"):
        train("teacher", cfg, runs / "teacher", resume=(runs / "teacher" / "last.pt").exists())
        shutil.copyfile(runs / "teacher" / "model.pt", out / "teacher.pt")

    for mode, name in STUDENTS.items():
        with watch.stage(f"train student ({mode})"):
            scfg = copy.deepcopy(cfg)
            scfg.distill.mode = mode
            scfg.distill.teacher = str(out / "teacher.pt")
            scfg.distill.cache = str(out / "flow_cache")
            run = runs / f"student_{mode}"
            train("student", scfg, run, resume=(run / "last.pt").exists())
            shutil.copyfile(run / "model.pt", out / name)

    checkpoints = {
        "teacher": out / "teacher.pt",
        "student (no KD)": out / "student.pt",
        "student + L1 KD": out / "student_l1.pt",
        "student + ALDK": out / "student_aldk.pt",
    }
    with watch.stage("evaluate"):
        pairs_csv = write_heldout(out / "heldout", cfg, n_test)
        rows = [_identity_row(pairs_csv)]
        for label, ckpt in checkpoints.items():
            summary = evaluate(ckpt, pairs_csv, out / "eval" / ckpt.stem)
            with (out / "eval" / ckpt.stem / "metrics.csv").open() as f:
                per_label = per_label_means(list(csv.DictReader(f)))
            rows.append({"model": label, **summary, "dice_per_label": per_label})

    with watch.stage("latency"):
        latency = _latency(checkpoints, cfg)
    summary = {
        "rows": rows,
        "latency": latency,
        "timings_s": watch.total(),
        "config": config,
        "overrides": overrides or [],
    }
    write_summary(out / "summary.json", summary)
    from medistill.registration.demo_report import write_demo_report

    write_demo_report(out, summary, pairs_csv, checkpoints)
    return summary


def _latency(checkpoints: dict[str, Path], cfg: RegistrationConfig) -> dict[str, Any]:
    from medistill.registration.bench import latency_table
    from medistill.registration.model import load_model

    models = {name: load_model(path)[0] for name, path in checkpoints.items()}
    keep = {"teacher": models["teacher"], "student": models["student + ALDK"]}
    table = latency_table(keep, [int(cfg.data.shape[0])], threads=2, repeats=5)
    return {name: {str(k): v for k, v in row.items()} for name, row in table.items()}
