"""Evaluating a registration checkpoint on pairs listed in a CSV; metrics per pair and a summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medistill.data import load_subject, read_pairs_csv
from medistill.errors import InputError
from medistill.io.validate import check_image_values
from medistill.metrics import dice as dice_per_label
from medistill.metrics import folding_fraction, mean_hd95, mean_tre, sdlogj
from medistill.metrics import jaccard as jaccard_per_label
from medistill.metrics.summary import nanmean, summarize_rows, write_metrics
from medistill.registration.apply import register_images
from medistill.registration.model import load_model
from medistill.typing import PathLike

if TYPE_CHECKING:
    from medistill.tasks import EvaluateRequest

SUMMARY_KEYS = (
    "dice_mean",
    "jaccard_mean",
    "hd95_mean",
    "tre_mean",
    "folding_pct",
    "sdlogj",
    "seconds_per_pair",
    "params",
)


def pair_metrics(reg, fixed, moving, *, labels: list[int] | None = None) -> dict[str, float]:
    """Metrics of one registration (``reg`` from :func:`register_images`) on the fixed grid."""
    row: dict[str, float] = {
        "folding_pct": 100.0 * folding_fraction(reg.jacobian),
        "sdlogj": sdlogj(reg.jacobian),
        "seconds": reg.seconds_total,
        "seconds_network": reg.seconds_network,
    }
    if reg.warped_labels is not None and fixed.labels is not None:
        pred, target = reg.warped_labels.data, fixed.labels.data
        chosen = labels
        d = dice_per_label(pred, target, labels=chosen)
        row["dice"] = nanmean(d)
        row["jaccard"] = nanmean(jaccard_per_label(pred, target, labels=chosen))
        row["hd95"] = mean_hd95(
            pred, target, labels=chosen, spacing=fixed.image.spacing, finite_only=True
        )
        for label, value in d.items():
            row[f"dice_{label}"] = value
    if fixed.landmarks is not None and moving.landmarks is not None:
        check_landmark_counts(fixed, moving)
        ok = ~(np.isnan(fixed.landmarks).any(1) | np.isnan(moving.landmarks).any(1))
        if ok.any():
            mapped = reg.moving_points(fixed.landmarks[ok])
            target = moving.image.index_to_world(moving.landmarks[ok])
            # both in world mm: the distances are in mm (no spacing needed)
            row["tre"] = mean_tre(target, mapped)
    return row


def check_landmark_counts(fixed, moving) -> None:
    """Refuse a pair whose landmark files list different numbers of points.

    Raises:
        InputError: naming both subjects and the counts.
    """
    if fixed.landmarks is None or moving.landmarks is None:
        return
    if len(fixed.landmarks) != len(moving.landmarks):
        raise InputError(
            f"landmarks of {fixed.name} ({len(fixed.landmarks)} points) and {moving.name} "
            f"({len(moving.landmarks)} points) differ in count: row i of both files must be "
            "the same point"
        )


def check_labels_present(rows: list[dict[str, Any]], labels: list[int] | None) -> None:
    """Refuse ``--labels`` values that no pair's label maps hold (their Dice would be NaN).

    Raises:
        InputError: naming the absent labels.
    """
    if not labels or not rows:
        return
    absent = [
        label
        for label in labels
        if not any(np.isfinite(row.get(f"dice_{label}", float("nan"))) for row in rows)
    ]
    if absent:
        raise InputError(
            f"--labels {','.join(map(str, absent))}: not present in any label map of the pairs"
        )


def evaluate_pairs(
    registrar: Callable[..., Any],
    pairs_csv: PathLike,
    out: PathLike,
    *,
    ndim: int | None = None,
    labels: list[int] | None = None,
    initial: str = "com",
    meta: dict[str, Any] | None = None,
    privileged: bool = False,
) -> dict[str, Any]:
    """Register every pair of ``pairs_csv`` with ``registrar`` and score it; writes
    ``metrics.csv`` and ``summary.json`` in ``out`` and returns the summary.

    Args:
        registrar: ``registrar(fixed, moving, moving_labels=..., fixed_labels=..., initial=...)``
            returning a :class:`~medistill.spatial.native.Registration` (a network through
            :func:`~medistill.spatial.native.register_images`, or the optimiser).
        pairs_csv: CSV with ``fixed``, ``moving``, ``fixed_labels``, ``moving_labels`` (required),
            optional ``fixed_landmarks``, ``moving_landmarks`` (voxel indices on each grid).
        ndim: dimensionality the registrar expects (None: any).
        labels: label values to score (default: every label of the fixed map).
        meta: entries put first in the summary (checkpoint, role, ...).
        privileged: hand the fixed labels to the registrar (the optimiser's privileged term;
            never for scoring a method fairly).
    """
    sources, pairs = read_pairs_csv(
        pairs_csv, required=("fixed", "moving", "fixed_labels", "moving_labels")
    )
    subjects: dict[int, Any] = {}
    rows = []
    for fi, mi in pairs:
        for k in (fi, mi):
            if k not in subjects:
                subjects[k] = load_subject(sources[k], dims=ndim)
                check_image_values(subjects[k].image)
        fixed, moving = subjects[fi], subjects[mi]
        check_landmark_counts(fixed, moving)
        reg = registrar(
            fixed.image,
            moving.image,
            moving_labels=moving.labels,
            fixed_labels=fixed.labels if privileged else None,
            initial=initial,
        )
        rows.append(
            {
                "fixed": fixed.name,
                "moving": moving.name,
                **pair_metrics(reg, fixed, moving, labels=labels),
            }
        )
    check_labels_present(rows, labels)
    meta = dict(meta or {})
    params = int(meta.pop("params", 0))
    summary: dict[str, Any] = {**meta, "pairs": len(rows)}
    summary.update(
        summarize_rows(
            rows,
            {
                "dice_mean": "dice",
                "jaccard_mean": "jaccard",
                "hd95_mean": "hd95",
                "tre_mean": "tre",
                "folding_pct": "folding_pct",
                "sdlogj": "sdlogj",
                "seconds_per_pair": "seconds",
            },
        )
    )
    summary["params"] = params
    write_metrics(out, rows, summary)
    return summary


def evaluate(
    checkpoint: PathLike,
    pairs_csv: PathLike,
    out: PathLike,
    *,
    labels: list[int] | None = None,
    initial: str = "com",
    affine_only: bool = False,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on every pair of ``pairs_csv`` (see :func:`evaluate_pairs`).

    With ``affine_only`` only the network's affine stem is applied (deformable cascades dropped).
    """
    model, ckpt, cfg = load_model(checkpoint)
    if affine_only:
        if model.affine is None:
            raise InputError(f"{checkpoint}: --affine-only needs a network with an affine stem")
        model.subnets = torch.nn.ModuleList()
    shape = tuple(cfg.data.shape)

    def registrar(fixed, moving, *, moving_labels=None, fixed_labels=None, initial="com"):
        return register_images(
            model, fixed, moving, shape=shape, moving_labels=moving_labels, initial=initial
        )

    meta = {
        "checkpoint": str(checkpoint),
        "role": ckpt.get("role") + (" (affine stem only)" if affine_only else ""),
        "working_shape": list(shape),
        "params": int(ckpt.get("params", 0)),
    }
    return evaluate_pairs(
        registrar, pairs_csv, out, ndim=len(shape), labels=labels, initial=initial, meta=meta
    )


def evaluate_request(
    checkpoint: PathLike, request: EvaluateRequest, out: PathLike
) -> dict[str, Any]:
    """``medistill evaluate`` for a registration checkpoint (the task registry's entry):
    ``request.pairs`` is required; ``labels`` and ``affine_only`` as in :func:`evaluate`.

    ``request`` is a :class:`medistill.tasks.EvaluateRequest`.
    """
    if request.pairs is None:
        raise InputError("evaluate: registration needs --pairs pairs.csv")
    return evaluate(
        checkpoint, request.pairs, out, labels=request.labels, affine_only=request.affine_only
    )
