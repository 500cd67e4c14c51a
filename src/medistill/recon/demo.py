"""``medistill demo recon``: KD-MRI end to end on the embedded slices.

Trains a DC-CNN teacher, then students without distillation, with attention transfer only
(KD-MRI step 2), with imitation only, with both (step 3 from step 2's weights), and without
distillation for twice the steps (KD's total: the equal-compute control); optionally the
same for VDSR super-resolution. Evaluates everything on held-out slices (the embedded test
split) and on the same slices with their contrast inverted inside the brain (T2-like: only the
training augmentation ever inverts a slice), times teacher and student on the CPU in one run, and
writes ``report.html`` with the checkpoints ``recon_teacher.pt``, ``recon_student.pt``,
``recon_at.pt``, ``recon_imitation.pt``, ``recon_kd.pt`` (and ``sr_teacher.pt``,
``sr_student.pt``, ``sr_kd.pt``).
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medistill.metrics.summary import write_summary
from medistill.recon.config import ReconConfig, presets
from medistill.report import Stopwatch
from medistill.train import load_config

log = logging.getLogger(__name__)

# name -> (role, distill mode, init from the run of, label)
RECON_RUNS: dict[str, tuple[str, str, str, str]] = {
    "recon_teacher": ("recon-teacher", "none", "", "teacher (DC-CNN 5x5)"),
    "recon_student": ("recon-student", "none", "", "student (5x3), no KD"),
    "recon_at": ("recon-student", "at", "", "student + AT only (step 2)"),
    "recon_imitation": ("recon-student", "imitation", "", "student + imitation only"),
    "recon_kd": ("recon-student", "imitation", "recon_at", "student + KD (AT, then imitation)"),
    "recon_student_2x": ("recon-student", "none", "", "student, no KD, 2x steps (KD's total)"),
}
# runs trained for a multiple of loop.steps: the teacher (trained once, as long as KD's student
# in all) and the equal-compute control of KD, whose student trains twice (attention stage, then
# imitation)
STEPS_FACTOR: dict[str, int] = {"recon_teacher": 2, "recon_student_2x": 2}
SR_RUNS: dict[str, tuple[str, str, str, str]] = {
    "sr_teacher": ("sr-teacher", "none", "", "teacher (VDSR 11)"),
    "sr_student": ("sr-student", "none", "", "student (VDSR 7), no KD"),
    "sr_at": ("sr-student", "at", "", "student + AT only (step 2)"),
    "sr_kd": ("sr-student", "imitation", "sr_at", "student + KD (AT, then imitation)"),
}


def write_heldout(folder: Path, size: int, n: int, seed: int) -> list[Path]:
    """``n`` held-out embedded slices (test split) as 2-D NIfTI files; returns their paths."""
    from medistill.io import Image, save
    from medistill.recon.data import embedded_set

    folder.mkdir(parents=True, exist_ok=True)
    test = embedded_set(n, size, seed=seed, split="test")
    paths = []
    for i in range(n):
        path = folder / f"slice{i:02d}.nii.gz"
        save(Image(test.images[i]), path)
        paths.append(path)
    return paths


def write_inverted(paths: list[Path], folder: Path) -> list[Path]:
    """The slices of ``paths`` with their contrast inverted inside the foreground
    (:func:`medistill.recon.augment.invert_foreground`), written to ``folder`` under the same
    names; returns their paths."""
    import torch

    from medistill.io import Image, load, save
    from medistill.recon.augment import invert_foreground

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        image = load(path)
        data = torch.from_numpy(np.asarray(image.data, dtype=np.float32))[None, None]
        inverted = invert_foreground(data)[0, 0].numpy()
        target = folder / path.name
        save(Image(inverted, image.affine), target)
        out.append(target)
    return out


def _train_runs(
    runs: dict[str, tuple[str, str, str, str]], cfg: ReconConfig, out: Path, watch: Stopwatch
) -> dict[str, Path]:
    from medistill.recon.training import train

    checkpoints: dict[str, Path] = {}
    teacher = ""
    for name, (role, kind, init, _) in runs.items():
        with watch.stage(f"train {name}"):
            rcfg = copy.deepcopy(cfg)
            rcfg.distill.mode = kind
            rcfg.distill.teacher = teacher if role.endswith("student") else ""
            rcfg.distill.init = str(checkpoints[init]) if init else ""
            if name in STEPS_FACTOR:
                factor = STEPS_FACTOR[name]
                rcfg.loop.steps *= factor
                rcfg.loop.lr_decay_steps = tuple(d * factor for d in rcfg.loop.lr_decay_steps)
            run = out / "runs" / name
            log.info("demo: training %s (%s, distill %s)", name, role, kind)
            train(role, rcfg, run, resume=(run / "last.pt").exists())
            shutil.copyfile(run / "model.pt", out / f"{name}.pt")
            checkpoints[name] = out / f"{name}.pt"
            if role.endswith("teacher"):
                teacher = str(checkpoints[name])
    return checkpoints


def _rows(
    runs: dict[str, tuple[str, str, str, str]],
    checkpoints: dict[str, Path],
    heldout: list[Path],
    out: Path,
    input_label: str,
) -> list[dict[str, Any]]:
    """One row per run (the degraded input first), scored on ``heldout``; evaluations in
    ``out/<run>``."""
    from medistill.recon.inference import evaluate

    rows: list[dict[str, Any]] = []
    for name, (_, _, _, label) in runs.items():
        summary = evaluate(checkpoints[name], heldout, out / name)
        if not rows:
            rows.append(
                {
                    "model": input_label,
                    "params": 0,
                    **{k: summary[f"input_{k}"] for k in _METRIC_KEYS},
                }
            )
        rows.append({"model": label, "name": name, **summary})
    return rows


_METRIC_KEYS = ("psnr_mean", "psnr_sd", "ssim_mean", "ssim_sd", "nmse_mean", "nmse_sd")


def _latency(
    checkpoints: dict[str, Path], names: tuple[str, str], sizes: tuple[int, ...]
) -> dict[str, dict[int, float]]:
    """Teacher and student CPU ms per slice (batch 1, 2 threads): the median of 5 runs, the
    better of two interleaved rounds."""
    from medistill.recon.inference import latency_ms
    from medistill.recon.model import load_model

    models = {n: load_model(checkpoints[n]) for n in names}
    result: dict[str, dict[int, float]] = {n: {} for n in names}
    for size in sizes:
        for _ in range(2):  # two interleaved rounds, keep the best
            for n, m in models.items():
                ms = latency_ms(m, size, repeats=5, threads=2)
                result[n][size] = min(ms, result[n].get(size, float("inf")))
    return result


def run_demo(
    out: Path,
    *,
    config: str = "demo",
    overrides: list[str] | None = None,
    sr: bool = True,
    n_test: int = 12,
    latency_sizes: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary also written to ``out/summary.json``.

    Args:
        out: output folder (an interrupted demo resumes its unfinished runs).
        config: preset or YAML (default ``demo``: 64x64 slices, 300 steps per run).
        overrides: ``section.key=value`` config overrides.
        sr: also train and evaluate the super-resolution models.
        n_test: held-out slices.
        latency_sizes: slice sides for the CPU timing (default: the training size and 256).
    """
    watch = Stopwatch()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(ReconConfig, config, presets=presets(), overrides=overrides or [])
    checkpoints = _train_runs(RECON_RUNS, cfg, out, watch)
    if sr:
        checkpoints.update(_train_runs(SR_RUNS, cfg, out, watch))

    with watch.stage("evaluate"):
        heldout = write_heldout(out / "heldout", cfg.data.size, n_test, cfg.data.seed)
        acc = f"{cfg.mask.acceleration:g}x"
        inverted = write_inverted(heldout, out / "heldout_inverted")
        zf, low = f"zero-filled ({acc})", f"low resolution (1/{cfg.sr.factor:g} k-space)"
        rows = _rows(RECON_RUNS, checkpoints, heldout, out / "eval", zf)
        rows_inv = _rows(RECON_RUNS, checkpoints, inverted, out / "eval_inverted", zf)
        sr_rows = _rows(SR_RUNS, checkpoints, heldout, out / "eval", low) if sr else []
        sr_rows_inv = []
        if sr:
            sr_rows_inv = _rows(SR_RUNS, checkpoints, inverted, out / "eval_inverted", low)
        for row, other in zip(rows + sr_rows, rows_inv + sr_rows_inv, strict=True):
            row["psnr_inverted_mean"] = other["psnr_mean"]

    with watch.stage("latency"):
        sizes = tuple(sorted(set(latency_sizes or (cfg.data.size, 256))))
        latency = _latency(checkpoints, ("recon_teacher", "recon_student"), sizes)
        if sr:
            latency.update(_latency(checkpoints, ("sr_teacher", "sr_student"), sizes))
    summary = {
        "rows": rows,
        "sr_rows": sr_rows,
        "rows_inverted": rows_inv,
        "sr_rows_inverted": sr_rows_inv,
        "latency_ms": {k: {str(s): v for s, v in d.items()} for k, d in latency.items()},
        "timings_s": watch.total(),
        "config": config,
        "overrides": overrides or [],
        "steps": cfg.loop.steps,
        "size": cfg.data.size,
        "acceleration": cfg.mask.acceleration,
    }
    write_summary(out / "summary.json", summary)
    from medistill.recon.demo_report import write_demo_report

    write_demo_report(out, summary, cfg, checkpoints, heldout, inverted)
    return summary
