"""The label-transfer demo's ``report.html``: results table, segmentations, Dice per structure and
training curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medistill.report import (
    dice_bar_figure,
    figure_to_data_uri,
    html_table,
    img_tag,
    label_name,
    mid_plane,
    timings_list,
    write_report,
)

__all__ = ["write_demo_report"]

COLOURS = {1: "#2ca02c", 2: "#ff7f0e", 3: "#1f77b4"}


def _segmentation_figure(panels: list[tuple[str, np.ndarray, np.ndarray | None]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, image, labels) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(mid_plane(image), cmap="gray")
        if labels is not None:
            plane = mid_plane(labels)
            for value, colour in COLOURS.items():
                if np.any(plane == value):
                    ax.contour(plane == value, levels=[0.5], colors=[colour], linewidths=0.7)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return figure_to_data_uri(fig)


def _curves_figure(log_path: Path) -> str | None:
    import matplotlib.pyplot as plt

    if not log_path.exists():
        return None
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return None
    skip = {"step", "it_per_s", "seconds", "loss", "skipped", "grad_norm", "disc_grad_norm"}
    names = [k for k in records[0] if k not in skip]
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name in names:
        ax.plot(steps, [r.get(name, np.nan) for r in records], label=name, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("term (unweighted)")
    ax.legend(fontsize=7, ncol=4)
    return figure_to_data_uri(fig)


def write_demo_report(
    out: Path, summary: dict[str, Any], images_csv: Path, checkpoints: dict[str, Path]
) -> Path:
    """Write ``out/report.html`` from the demo's summary and the first held-out subject."""
    from medistill.io import check_same_grid, load
    from medistill.labeltransfer.apply import transfer_labels
    from medistill.labeltransfer.evaluate import read_images_csv, resolve_atlas
    from medistill.labeltransfer.model import load_model, transfer_network

    image_path, labels_path = read_images_csv(images_csv)[0]
    image = load(image_path, is_label=False)
    truth = check_same_grid(image, load(labels_path, is_label=True))
    panels: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for name, path in checkpoints.items():
        net, ckpt, cfg = load_model(path)
        atlas, atlas_labels = resolve_atlas(ckpt, cfg.model.ndim, None, None, path)
        if not panels:
            panels.append(("atlas and its labels", atlas.data, atlas_labels.data))
            panels.append(("held-out subject, true labels", image.data, truth.data))
        result = transfer_labels(
            transfer_network(net), atlas, atlas_labels, image, shape=tuple(cfg.data.shape)
        )
        panels.append((f"transferred: {name}", image.data, result.labels.data))
    rows = summary["rows"]
    for row in rows:
        for key, value in row.get("dice_per_label", {}).items():
            row[f"Dice {label_name(key)}"] = value
    columns = ["model", "dice_mean", "dice_sd"]
    columns += [f"Dice {label_name(k)}" for k in rows[-1].get("dice_per_label", {})]
    columns += ["folding_pct", "fwd_length_vox", "fwd_spread", "collapsed"]
    columns += ["seconds_per_image", "params"]
    timings = timings_list(summary["timings_s"])
    sections = [
        (
            "Held-out subjects: Dice of the transferred labels",
            html_table(rows, columns)
            + "<p>One labelled atlas, unlabelled training images; the labels of held-out "
            "subjects are used only here. 'no registration' lays the atlas labels on each "
            "subject through world space. Folding: % of voxels with a non-positive Jacobian "
            "determinant; seconds include resampling to and from the working grid. Collapse guard "
            "(last training log): mean length of G_F's field and its spread over a fixed probe of "
            "training images, in voxels; 'collapsed' = 1 when the spread is below "
            "loss.collapse_threshold (an image-independent forward field).</p>",
        ),
        (
            "Segmentations",
            img_tag(
                _segmentation_figure(panels),
                "Contours: CSF (green), GM (orange), WM (blue). 3-D runs show the middle "
                "axial plane.",
            ),
        ),
        ("Dice per structure", img_tag(dice_bar_figure(rows), "Mean over held-out subjects.")),
    ]
    curves = _curves_figure(out / "runs" / "ltnet" / "log.jsonl")
    if curves is not None:
        sections.append(
            (
                "LT-Net training",
                img_tag(curves, "Loss terms (unweighted) and the discriminator loss over steps."),
            )
        )
    sections.append(
        (
            "Run",
            f"{timings}<p>data: {summary['data']}; working grid "
            f"{summary['working_shape']}; config: {summary['config']} {summary['overrides']}</p>",
        )
    )
    return write_report(
        out / "report.html", "medistill demo: one-shot segmentation by label transfer", sections
    )
