"""``medistill demo``: the whole registration-by-distillation story on the embedded data.

Trains a small teacher, builds the teacher-flow cache, distils three students (no distillation,
L1 flow distillation, ALDK), evaluates all of them on held-out embedded subjects, measures CPU
latency in one run, and writes ``report.html`` with the checkpoints ``teacher.pt``, ``student.pt``,
``student_l1.pt`` and ``student_aldk.pt``.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medistill.registration.config import RegistrationConfig, presets
from medistill.train import load_config

log = logging.getLogger(__name__)

STUDENTS = {"none": "student.pt", "l1": "student_l1.pt", "aldk": "student_aldk.pt"}
LABEL_NAMES = {1: "CSF", 2: "GM", 3: "WM"}


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
    from medistill.metrics import dice, hd95, summarize

    sources, pairs = read_pairs_csv(csv_path)
    dices, hds, per_label = [], [], {}
    for fi, mi in pairs:
        fixed = load(sources[fi].labels, is_label=True)
        f = fixed.data
        m = load(sources[mi].labels, is_label=True).data
        d = dice(m, f)
        dices.append(np.nanmean(list(d.values())))
        hds.append(np.nanmean(list(hd95(m, f, spacing=fixed.spacing).values())))
        for k, v in d.items():
            per_label.setdefault(k, []).append(v)
    return {
        "model": "no registration",
        "dice_mean": summarize(dices)[0],
        "hd95_mean": summarize(hds)[0],
        "folding_pct": 0.0,
        "per_label": {k: float(np.nanmean(v)) for k, v in per_label.items()},
    }


def run_demo(
    out: Path, *, config: str = "demo", overrides: list[str] | None = None, n_test: int = 4
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``."""
    from medistill.registration.evaluate import evaluate
    from medistill.registration.training import train

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(RegistrationConfig, config, presets=presets(), overrides=overrides or [])
    timings: dict[str, float] = {}
    runs = out / "runs"

    t = time.perf_counter()
    train("teacher", cfg, runs / "teacher", resume=(runs / "teacher" / "last.pt").exists())
    shutil.copyfile(runs / "teacher" / "model.pt", out / "teacher.pt")
    timings["train teacher"] = time.perf_counter() - t

    for mode, name in STUDENTS.items():
        t = time.perf_counter()
        scfg = copy.deepcopy(cfg)
        scfg.distill.mode = mode
        scfg.distill.teacher = str(out / "teacher.pt")
        scfg.distill.cache = str(out / "flow_cache")
        run = runs / f"student_{mode}"
        train("student", scfg, run, resume=(run / "last.pt").exists())
        shutil.copyfile(run / "model.pt", out / name)
        timings[f"train student ({mode})"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs_csv = write_heldout(out / "heldout", cfg, n_test)
    rows = [_identity_row(pairs_csv)]
    checkpoints = {
        "teacher": out / "teacher.pt",
        "student (no KD)": out / "student.pt",
        "student + L1 KD": out / "student_l1.pt",
        "student + ALDK": out / "student_aldk.pt",
    }
    for label, ckpt in checkpoints.items():
        summary = evaluate(ckpt, pairs_csv, out / "eval" / ckpt.stem)
        per_label = _per_label(out / "eval" / ckpt.stem / "metrics.csv")
        rows.append({"model": label, **summary, "per_label": per_label})
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    latency = _latency(checkpoints, cfg)
    timings["latency"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = {
        "rows": rows,
        "latency": latency,
        "timings_s": timings,
        "config": config,
        "overrides": overrides or [],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    from medistill.registration.demo_report import write_demo_report

    write_demo_report(out, summary, pairs_csv, checkpoints)
    return summary


def _per_label(metrics_csv: Path) -> dict[int, float]:
    import csv

    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    out: dict[int, float] = {}
    for key in rows[0]:
        if key.startswith("dice_") and key[5:].isdigit():
            values = [float(r[key]) for r in rows if r[key] not in ("", "nan")]
            out[int(key[5:])] = float(np.mean(values)) if values else float("nan")
    return out


def _latency(checkpoints: dict[str, Path], cfg: RegistrationConfig) -> dict[str, Any]:
    from medistill.registration.bench import latency_table
    from medistill.registration.model import load_model

    models = {name: load_model(path)[0] for name, path in checkpoints.items()}
    keep = {"teacher": models["teacher"], "student": models["student + ALDK"]}
    table = latency_table(keep, [int(cfg.data.shape[0])], threads=2, repeats=5)
    return {name: {str(k): v for k, v in row.items()} for name, row in table.items()}
