"""``medistill demo labeltransfer``: one-shot segmentation by label transfer on the embedded data.

Trains LT-Net (all terms of the paper) and the forward-only baseline (VoxelMorph-style: ``G_F``
with ``L_sim + L_smooth``) with one labelled atlas (the MNI152 template and its tissue labels) and
unlabelled embedded subjects, segments held-out labelled subjects by warping the atlas labels,
and writes ``report.html``, ``summary.json`` and the checkpoints ``ltnet.pt`` and
``forward_only.pt``. The ``demo`` preset is 2-D (axial slices, minutes on 2 CPU cores); any other
preset or overrides (``--set``) give a 3-D demo.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medistill.labeltransfer.config import LabelTransferConfig, presets
from medistill.train import load_config

__all__ = ["BACKWARD_TERMS", "forward_only", "identity_row", "run_demo"]

BACKWARD_TERMS = ("gan", "cyc", "anatomy", "trans", "diff")


def forward_only(cfg: LabelTransferConfig) -> LabelTransferConfig:
    """A copy of ``cfg`` with only ``L_sim`` and ``L_smooth`` (VoxelMorph-style registration)."""
    out = copy.deepcopy(cfg)
    for term in BACKWARD_TERMS:
        setattr(out.loss, term, 0.0)
    return out


def identity_row(images_csv: Path, atlas_labels: Path, labels: list[int]) -> dict[str, Any]:
    """Dice of the atlas labels laid on each image through world space, without registration."""
    from medistill.io import load, resample_array
    from medistill.labeltransfer.evaluate import read_images_csv
    from medistill.metrics import dice, summarize

    atlas = load(atlas_labels, is_label=True)
    means, per_label = [], {k: [] for k in labels}
    for _image, labels_path in read_images_csv(images_csv):
        truth = load(labels_path, is_label=True)
        laid = resample_array(atlas.data, atlas.affine, truth.affine, truth.shape, order=0)
        d = dice(laid, truth.data, labels=labels)
        means.append(float(np.nanmean(list(d.values()))))
        for k, v in d.items():
            per_label[k].append(v)
    mean, sd = summarize(means)
    return {
        "model": "no registration",
        "dice_mean": mean,
        "dice_sd": sd,
        "dice_per_label": {str(k): float(np.nanmean(v)) for k, v in per_label.items()},
        "folding_pct": 0.0,
    }


def _train(cfg: LabelTransferConfig, run: Path, data) -> float:
    from medistill.labeltransfer.training import train

    t = time.perf_counter()
    train(cfg, run, resume=(run / "last.pt").exists(), data=data)
    return time.perf_counter() - t


def run_demo(
    out: Path, *, config: str = "demo", overrides: list[str] | None = None, n_test: int = 4
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``."""
    from medistill.labeltransfer.data import build_data, heldout_subjects, write_eval_set
    from medistill.labeltransfer.demo_report import write_demo_report
    from medistill.labeltransfer.evaluate import evaluate

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(LabelTransferConfig, config, presets=presets(), overrides=overrides or [])
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = build_data(cfg.data)
    timings["data"] = time.perf_counter() - t

    runs = {
        "LT-Net": (cfg, "ltnet"),
        "forward-only (VoxelMorph-style)": (forward_only(cfg), "forward"),
    }
    checkpoints = {}
    for name, (run_cfg, folder) in runs.items():
        timings[f"train {name}"] = _train(run_cfg, out / "runs" / folder, data)
        target = out / ("ltnet.pt" if folder == "ltnet" else "forward_only.pt")
        shutil.copyfile(out / "runs" / folder / "model.pt", target)
        checkpoints[name] = target

    t = time.perf_counter()
    images_csv, atlas_path, atlas_labels_path = write_eval_set(
        out / "heldout", data.atlas, heldout_subjects(cfg.data, n_test)
    )
    labels = [int(v) for v in data.atlas.values.tolist() if v != 0]
    rows = [identity_row(images_csv, atlas_labels_path, labels)]
    for name in ("forward-only (VoxelMorph-style)", "LT-Net"):
        summary = evaluate(checkpoints[name], images_csv, out / "eval" / checkpoints[name].stem)
        rows.append({"model": name, **summary})
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = {
        "rows": rows,
        "timings_s": timings,
        "config": config,
        "overrides": overrides or [],
        "data": data.description,
        "working_shape": list(cfg.data.shape),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    write_demo_report(out, summary, images_csv, checkpoints)
    return summary
