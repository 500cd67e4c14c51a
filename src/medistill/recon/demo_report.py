"""The recon demo's ``report.html``: results tables, example images with error maps, training
curves and CPU latency."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.recon.config import ReconConfig
from medistill.report import figure_to_data_uri, html_table, img_tag, mid_plane, write_report

COLUMNS = ["model", "params", "PSNR (dB)", "SSIM", "NMSE", "CPU ms / slice", "CPU ms / 256^2 slice"]


def _pm(mean: float, sd: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _table(rows: list[dict[str, Any]], latency: dict[str, dict[str, float]], size: int) -> str:
    """Results table; latency from the interleaved teacher / student timing where there is one,
    else from the evaluation (at the training size)."""
    out = []
    for r in rows:
        name = r.get("name", "")
        lat = latency.get(name, {})
        ms = lat.get(str(size), r.get("ms_per_slice"))
        out.append(
            {
                "model": r["model"],
                "params": f"{r['params']:,}" if r.get("params") else "-",
                "PSNR (dB)": _pm(r["psnr_mean"], r["psnr_sd"], 2),
                "SSIM": _pm(r["ssim_mean"], r["ssim_sd"], 4),
                "NMSE": _pm(r["nmse_mean"], r["nmse_sd"], 4),
                "CPU ms / slice": f"{ms:.1f} ({size}^2)" if ms is not None else "-",
                "CPU ms / 256^2 slice": f"{lat['256']:.1f}" if "256" in lat else "-",
            }
        )
    return html_table(out, COLUMNS)


def _augment_text(cfg: ReconConfig) -> str:
    d = cfg.data
    if not d.augment:
        return "as it is (no augmentation)"
    return (
        f"augmented: contrast inverted with probability {d.aug_invert:g}, gamma in "
        f"[{d.aug_gamma[0]:g}, {d.aug_gamma[1]:g}], bias field {d.aug_bias:g}, noise up to "
        f"{d.aug_noise:g}" + (", flips" if d.aug_flip else "")
    )


def _example_figure(
    checkpoints: dict[str, Path], names: list[tuple[str, str]], heldout: Path, title: str
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medistill.io import load
    from medistill.recon.model import load_model

    target = torch.from_numpy(load(heldout).data.astype(np.float32))[None, None]
    target = target / target.max().clamp_min(1e-12)
    first = load_model(checkpoints[names[0][0]])
    _, degraded = first.inputs(target)
    panels = [(title, degraded[0, 0].numpy())]
    for name, label in names:
        model = load_model(checkpoints[name])
        inputs, _ = model.inputs(target)
        panels.append((label, model.run(*inputs)[0, 0].numpy()))
    panels.append(("target", target[0, 0].numpy()))
    ref = target[0, 0].numpy()
    errors = [np.abs(p - ref) for _, p in panels[:-1]]
    vmax = max(float(np.percentile(e, 99.5)) for e in errors) or 1.0
    fig, axes = plt.subplots(2, len(panels), figsize=(2.4 * len(panels), 5.0))
    for i, (label, img) in enumerate(panels):
        axes[0, i].imshow(mid_plane(img), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(label, fontsize=8)
        if i < len(errors):
            axes[1, i].imshow(mid_plane(errors[i]), cmap="inferno", vmin=0, vmax=vmax)
            axes[1, i].set_title(f"|error|, MAE {errors[i].mean():.4f}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    return figure_to_data_uri(fig)


def _curves(out: Path, names: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name in names:
        log = out / "runs" / name / "log.jsonl"
        if not log.exists():
            continue
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        key = "l1_target" if "l1_target" in recs[0] else "loss"
        ax.plot([r["step"] for r in recs], [r[key] for r in recs], label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("L1 to the target (training batch)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return figure_to_data_uri(fig)


def write_demo_report(
    out: Path,
    summary: dict[str, Any],
    cfg: ReconConfig,
    checkpoints: dict[str, Path],
    heldout: list[Path],
    inverted: list[Path] | None = None,
) -> Path:
    """Write ``out/report.html`` from the demo's summary and checkpoints (``inverted``: the
    held-out slices with their contrast inverted, scored in ``summary["rows_inverted"]``)."""
    latency = summary["latency_ms"]
    acc = f"{cfg.mask.acceleration:g}x"
    setup = (
        f"<p>Embedded MNI152 slices at {cfg.data.size}x{cfg.data.size} "
        f"({cfg.data.slices} training slices, {len(heldout)} held-out slices from disjoint "
        f"template planes; each training batch {_augment_text(cfg)}), "
        f"1-D Cartesian {html.escape(cfg.mask.kind)} mask at {acc} with a "
        f"fully sampled centre, {cfg.loop.steps} Adam steps per run "
        f"(batch {cfg.loop.batch_size}, lr {cfg.loop.lr:g}). PSNR/SSIM per held-out slice "
        "with data range = the target's maximum "
        "(SSIM 7x7, K1 0.01, K2 0.03), mean ± sd. Latency: CPU, batch 1, 2 threads, median of 5 "
        "(the better of two rounds), teacher and student timed in the same run. The second table "
        "of each task scores the same held-out slices with their contrast inverted inside the "
        "brain (dark fluid made bright, T2-like); no training slice is one of them.</p>"
        "<p>KD-MRI: step 1 trains the teacher with L1 (for twice the steps: it is trained once, "
        "and as long as KD's student is in all); step 2 trains the student with attention "
        "transfer only (teacher conv3 / student conv2 of every cascade); step 3 starts from step "
        "2's weights with 0.5 L1(target) + 0.5 L1(teacher). The KD student thus trains for twice "
        "the steps of the others; the last row, the plain student trained that long, is the "
        "equal-compute control that KD has to beat. A demo this short shows the mechanics; the "
        "differences between students need longer training to be meaningful.</p>"
    )
    sections = [("Setup", setup)]
    recon_names = [
        ("recon_teacher", "teacher"),
        ("recon_student", "student"),
        ("recon_kd", "student + KD"),
    ]
    body = _table(summary["rows"], latency, cfg.data.size)
    body += img_tag(
        _example_figure(checkpoints, recon_names, heldout[0], f"zero-filled {acc}"),
        "Held-out slice: zero-filled, teacher, student, KD student, target; error maps below.",
    )
    if summary.get("rows_inverted"):
        body += "<h3>Held-out slices, contrast inverted</h3>"
        body += _table(summary["rows_inverted"], {}, cfg.data.size)
        if inverted:
            body += img_tag(
                _example_figure(checkpoints, recon_names, inverted[0], f"zero-filled {acc}"),
                "The same slice with its contrast inverted.",
            )
    sections.append((f"Reconstruction (DC-CNN, {acc})", body))
    if summary.get("sr_rows"):
        sr_names = [("sr_teacher", "teacher"), ("sr_student", "student"), ("sr_kd", "student + KD")]
        body = _table(summary["sr_rows"], latency, cfg.data.size)
        body += img_tag(
            _example_figure(checkpoints, sr_names, heldout[0], "low resolution"),
            "Held-out slice: low-resolution input, teacher, student, KD student, target.",
        )
        if summary.get("sr_rows_inverted"):
            body += "<h3>Held-out slices, contrast inverted</h3>"
            body += _table(summary["sr_rows_inverted"], {}, cfg.data.size)
        sections.append((f"Super-resolution (VDSR, 1/{cfg.sr.factor:g} of k-space)", body))
    names = [n for n in checkpoints]
    sections.append(("Training curves", img_tag(_curves(out, names), "L1 to the target")))
    timing_rows = [{"stage": k, "seconds": round(v, 1)} for k, v in summary["timings_s"].items()]
    sections.append(("Run time", html_table(timing_rows, ["stage", "seconds"])))
    return write_report(out / "report.html", "medistill demo: KD-MRI reconstruction", sections)
