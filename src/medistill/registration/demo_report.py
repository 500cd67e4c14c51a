"""The demo's ``report.html``: results table and figures (overlays, deformation grid, Jacobian,
Dice per label, latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medistill.report import (
    dice_bar_figure,
    figure_to_data_uri,
    html_table,
    img_tag,
    mid_plane,
    timings_list,
    write_report,
)


def _overlay_figure(fixed, moving, warps: dict[str, Any], fixed_labels) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("fixed", fixed.data), ("moving", moving.data)] + [
        (f"warped: {k}", v.warped.data) for k, v in warps.items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    contour = mid_plane(fixed_labels.data)
    for ax, (title, data) in zip(axes, panels, strict=True):
        ax.imshow(mid_plane(data), cmap="gray")
        ax.contour(contour, levels=[1.5, 2.5], colors=["#ff7f0e", "#1f77b4"], linewidths=0.6)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return figure_to_data_uri(fig)


def _grid_and_jacobian_figure(reg) -> str:
    import matplotlib.pyplot as plt

    disp = reg.disp_voxel
    z = disp.shape[3] // 2
    u0, u1 = disp[0, :, :, z], disp[1, :, :, z]
    n0, n1 = u0.shape
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    ax = axes[0]
    step = max(1, n0 // 24)
    ii, jj = np.meshgrid(np.arange(n0), np.arange(n1), indexing="ij")
    p0, p1 = ii + u0, jj + u1
    for k in range(0, n0, step):
        ax.plot(p0[k, :], p1[k, :], color="k", linewidth=0.5)
    for k in range(0, n1, step):
        ax.plot(p0[:, k], p1[:, k], color="k", linewidth=0.5)
    ax.set_aspect("equal")
    ax.set_title("deformation grid (axial slice)", fontsize=9)
    ax.axis("off")
    jac = mid_plane(reg.jacobian)
    im = axes[1].imshow(jac, cmap="RdBu_r", vmin=0, vmax=2)
    axes[1].set_title("Jacobian determinant (<= 0 means folding)", fontsize=9)
    axes[1].axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    return figure_to_data_uri(fig)


def _speed_figure(speed: dict[str, float]) -> str:
    import matplotlib.pyplot as plt

    names = list(speed)
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(names)))
    ax.barh(names, [speed[n] for n in names], color="#2a7")
    ax.set_xscale("log")
    ax.set_xlabel("CPU seconds per pair, end to end (log scale)")
    return figure_to_data_uri(fig)


def write_demo_report(
    out: Path,
    summary: dict[str, Any],
    pairs_csv: Path,
    checkpoints: dict[str, Path],
    cfg: Any = None,
) -> Path:
    """Write ``out/report.html`` from the demo's summary and one held-out pair."""
    from medistill.data import load_subject, read_pairs_csv
    from medistill.registration.model import load_model
    from medistill.spatial.native import register_images

    sources, pairs = read_pairs_csv(pairs_csv)
    fixed, moving = (load_subject(sources[k]) for k in pairs[0])
    warps = {}
    if "teacher" not in checkpoints and cfg is not None:
        from medistill.registration.demo import _optimiser_registrar

        warps["teacher: optimiser"] = _optimiser_registrar(cfg)(
            fixed.image, moving.image, moving_labels=moving.labels
        )
    for name in ("teacher", "student + ALDK"):
        if name not in checkpoints:
            continue
        model, _, mcfg = load_model(checkpoints[name])
        warps[name] = register_images(
            model,
            fixed.image,
            moving.image,
            shape=tuple(mcfg.data.shape),
            moving_labels=moving.labels,
        )
    rows = summary["rows"]
    columns = [
        "model",
        "dice_mean",
        "jaccard_mean",
        "hd95_mean",
        "folding_pct",
        "sdlogj",
        "seconds_per_pair",
        "params",
    ]
    lat = summary["latency"]
    size = next(iter(lat["student"]))
    speed = summary.get("speed", {})
    student_s = speed.get("student + ALDK")
    ratios = [
        f"{name}: <b>{seconds / student_s:.1f}x</b> the student's time"
        for name, seconds in speed.items()
        if student_s and not name.startswith("student")
    ]
    forward = ", ".join(f"{n} {v[size]['median_s'] * 1000:.0f} ms" for n, v in lat.items())
    timings = timings_list(summary["timings_s"])
    sections = [
        (
            "Results on held-out embedded subjects",
            html_table(rows, columns)
            + "<p>Dice / Jaccard over the tissue classes CSF, GM, WM; HD95 in mm; seconds per pair "
            "include resampling to and from the working grid. 'no registration' scores the "
            "moving labels as they are.</p>",
        ),
        (
            "Fixed, moving and warped images",
            img_tag(
                _overlay_figure(fixed.image, moving.image, warps, fixed.labels),
                "Middle axial slice; contours: fixed GM (orange) and WM (blue) boundaries.",
            ),
        ),
        (
            "Student + ALDK deformation",
            img_tag(
                _grid_and_jacobian_figure(warps["student + ALDK"]),
                "Deformed grid and Jacobian determinant.",
            ),
        ),
        ("Dice per label", img_tag(dice_bar_figure(rows), "Mean Dice over held-out pairs.")),
        (
            "Speed",
            img_tag(_speed_figure(speed), "Same held-out pairs, same machine and threads, one run.")
            + f"<p>Seconds per pair end to end relative to the student + ALDK: {'; '.join(ratios)}."
            f" Network forward pass at {size}^3 (median, 2 threads): {forward}.</p>",
        ),
        ("Run", f"{timings}<p>config: {summary['config']} {summary['overrides']}</p>"),
    ]
    return write_report(
        out / "report.html", "medistill demo: registration by distillation", sections
    )
