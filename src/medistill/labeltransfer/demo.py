"""``medistill demo labeltransfer``: one-shot segmentation by label transfer on the embedded data.

Trains the forward-only baseline (VoxelMorph-style: ``G_F`` with ``L_sim + L_smooth``), then
LT-Net (all terms of the paper) with ``G_F`` starting from that baseline (unless the config's
``model.forward_init`` names another checkpoint), with one labelled atlas (the MNI152 template and
its tissue labels) and unlabelled embedded subjects; segments held-out labelled subjects by
warping the atlas labels, and writes ``report.html``, ``summary.json`` and the checkpoints
``ltnet.pt`` and ``forward_only.pt``. The ``demo`` preset is 3-D (48^3, G_B pre-trained, balanced
terms); ``demo-2d`` is the 2-D demo (axial slices, the seed's raw weights).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from medistill.labeltransfer.config import LabelTransferConfig, presets
from medistill.metrics.summary import nanmean, per_label_means, summarize_rows, write_summary
from medistill.report import Stopwatch
from medistill.train import load_config

__all__ = ["BACKWARD_TERMS", "collapse_guard", "forward_only", "identity_row", "run_demo"]

BACKWARD_TERMS = ("gan", "cyc", "anatomy", "trans", "diff")


def forward_only(cfg: LabelTransferConfig) -> LabelTransferConfig:
    """A copy of ``cfg`` with only ``L_sim`` and ``L_smooth`` (VoxelMorph-style registration):
    no ``G_B`` (so no pre-training), the raw terms (no balance), a random start."""
    out = copy.deepcopy(cfg)
    for term in BACKWARD_TERMS:
        setattr(out.loss, term, 0.0)
    out.loss.backward_pretrain = 0
    out.loss.pretrain_target = 0.0
    out.loss.balance = "none"
    out.model.forward_init = ""
    return out


def identity_row(images_csv: Path, atlas_labels: Path, labels: list[int]) -> dict[str, Any]:
    """Dice and HD95 (mm, mean over structures with a finite value) of the atlas labels laid on
    each image through world space, without registration."""
    from medistill.io import load
    from medistill.labeltransfer.evaluate import read_images_csv
    from medistill.metrics import dice, mean_hd95

    atlas = load(atlas_labels, is_label=True)
    rows = []
    for _image, labels_path in read_images_csv(images_csv):
        truth = load(labels_path, is_label=True)
        laid = truth.grid.sample(atlas.data, atlas.grid, order=0)
        d = dice(laid, truth.data, labels=labels)
        h = mean_hd95(laid, truth.data, labels=labels, spacing=truth.spacing, finite_only=True)
        rows.append(
            {
                "dice": nanmean(d),
                "hd95": h,
                **{f"dice_{k}": v for k, v in d.items()},
            }
        )
    return {
        "model": "no registration",
        **summarize_rows(rows, {"dice_mean": "dice", "hd95_mean": "hd95"}),
        "dice_per_label": per_label_means(rows),
        "folding_pct": 0.0,
    }


def collapse_guard(log: Path) -> dict[str, float]:
    """The collapse guard's last reading in a training log (``fwd_spread``, ``fwd_length_vox``,
    ``collapsed``; empty when the log has none)."""
    import json

    keys = ("fwd_spread", "fwd_length_vox", "collapsed")
    last: dict[str, float] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if all(k in record for k in keys):
                last = {k: float(record[k]) for k in keys}
    return last


def run_demo(
    out: Path, *, config: str = "demo", overrides: list[str] | None = None, n_test: int = 4
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary written to ``out/summary.json``."""
    from medistill.labeltransfer.data import build_data, heldout_subjects, write_eval_set
    from medistill.labeltransfer.demo_report import write_demo_report
    from medistill.labeltransfer.evaluate import evaluate
    from medistill.labeltransfer.training import train

    watch = Stopwatch()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(LabelTransferConfig, config, presets=presets(), overrides=overrides or [])
    with watch.stage("data"):
        data = build_data(cfg.data)

    lt_cfg = copy.deepcopy(cfg)
    if not lt_cfg.model.forward_init:  # LT-Net adds its cycles to a forward registration
        lt_cfg.model.forward_init = str(out / "runs" / "forward" / "model.pt")
    runs = {
        "forward-only (VoxelMorph-style)": (forward_only(cfg), "forward"),
        "LT-Net": (lt_cfg, "ltnet"),
    }
    checkpoints = {}
    for name, (run_cfg, folder) in runs.items():
        run = out / "runs" / folder
        with watch.stage(f"train {name}"):
            train(run_cfg, run, resume=(run / "last.pt").exists(), data=data)
        target = out / ("ltnet.pt" if folder == "ltnet" else "forward_only.pt")
        shutil.copyfile(out / "runs" / folder / "model.pt", target)
        checkpoints[name] = target

    with watch.stage("evaluate"):
        images_csv, atlas_path, atlas_labels_path = write_eval_set(
            out / "heldout", data.atlas, heldout_subjects(cfg.data, n_test)
        )
        labels = [int(v) for v in data.atlas.values.tolist() if v != 0]
        rows = [identity_row(images_csv, atlas_labels_path, labels)]
        for name in ("forward-only (VoxelMorph-style)", "LT-Net"):
            ckpt = checkpoints[name]
            row = {"model": name, **evaluate(ckpt, images_csv, out / "eval" / ckpt.stem)}
            rows.append({**row, **collapse_guard(out / "runs" / runs[name][1] / "log.jsonl")})
    summary = {
        "rows": rows,
        "timings_s": watch.total(),
        "config": config,
        "overrides": overrides or [],
        "data": data.description,
        "working_shape": list(cfg.data.shape),
    }
    write_summary(out / "summary.json", summary)
    write_demo_report(out, summary, images_csv, checkpoints)
    return summary
