"""Evaluating label transfer on labelled images listed in a CSV: Dice per structure and summary.

CSV columns: ``image`` and ``labels`` (paths relative to the CSV). Outputs in ``out``:
``metrics.csv`` (one row per image: ``image``, ``dice_mean``, ``dice_<label>`` per structure,
``hd95`` (mm, mean over the structures with a finite value), ``folding_pct``, ``seconds``) and
``summary.json`` (``dice_mean``, ``dice_sd``, ``dice_per_label``, ``hd95_mean``, ``hd95_sd``, ...),
both written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from medistill.errors import InputError
from medistill.io import Image, check_same_grid, load
from medistill.labeltransfer.apply import transfer_labels
from medistill.labeltransfer.data import atlas_images
from medistill.labeltransfer.model import checkpoint_atlas, load_model, transfer_network
from medistill.metrics import dice, folding_fraction, mean_hd95
from medistill.metrics.summary import nanmean, per_label_means, summarize_rows, write_metrics
from medistill.typing import PathLike

if TYPE_CHECKING:
    from medistill.tasks import EvaluateRequest

__all__ = ["evaluate", "evaluate_transfer", "read_images_csv", "resolve_atlas"]


def read_images_csv(path: PathLike) -> list[tuple[Path, Path]]:
    """``(image, labels)`` paths of a CSV with columns ``image`` and ``labels``.

    Raises:
        InputError: unreadable CSV, missing columns, no rows or an empty cell.
    """
    from medistill.data.datasets import read_csv_rows, resolve

    path = Path(path)
    rows = read_csv_rows(path, ("image", "labels"))
    out = []
    for line, row in enumerate(rows, start=2):
        image = resolve(path.parent, row["image"])
        labels = resolve(path.parent, row["labels"])
        if image is None or labels is None:
            raise InputError(f"{path}: row {line} needs both an 'image' and a 'labels' path")
        out.append((image, labels))
    return out


def evaluate_transfer(
    model: nn.Module,
    shape: tuple[int, ...],
    atlas: Image,
    atlas_labels: Image,
    images_csv: PathLike,
    out: PathLike,
    *,
    labels: Sequence[int] | None = None,
    interp: str = "linear",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Transfer ``atlas_labels`` to every image of ``images_csv`` with ``model`` and score it.

    Args:
        model: registration network ``model(fixed, moving).disp`` (eval mode).
        shape: its working grid.
        atlas, atlas_labels: the atlas and its label map (same grid).
        images_csv: CSV with columns ``image``, ``labels``.
        out: output folder (``metrics.csv``, ``summary.json``).
        labels: structures to score (default: the atlas' non-zero labels).
        interp: label interpolation (see :func:`transfer_labels`).
        meta: extra entries for the summary (checkpoint, role, ...).

    Returns:
        The summary written to ``summary.json``.
    """

    def transfer(image: Image) -> tuple[Image, np.ndarray, float]:
        result = transfer_labels(model, atlas, atlas_labels, image, shape=shape, interp=interp)
        return result.labels, result.jacobian, result.seconds_total

    meta = {**(meta or {}), "working_shape": list(shape)}
    return score_transfers(
        transfer, atlas_labels, images_csv, out, ndim=len(shape), labels=labels, meta=meta
    )


TransferFunction = Callable[[Image], tuple[Image, np.ndarray, float]]
"""An image -> (transferred label map on its grid, Jacobian determinant of the transform on its
grid, seconds): any way of transferring the atlas labels (a network, the optimiser, ...)."""


def score_transfers(
    transfer: TransferFunction,
    atlas_labels: Image,
    images_csv: PathLike,
    out: PathLike,
    *,
    ndim: int,
    labels: Sequence[int] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``transfer`` on every image of ``images_csv`` and score it against its label map:
    Dice per structure (default: the atlas' non-zero labels), HD95 (mm, on the image's spacing,
    mean over the structures where it is finite), folding (% of voxels with a non-positive
    Jacobian), seconds per image. Writes ``metrics.csv`` and ``summary.json`` in
    ``out`` and returns the summary (``meta`` first)."""
    chosen = (
        [int(v) for v in labels]
        if labels is not None
        else [int(v) for v in np.unique(atlas_labels.data) if v != 0]
    )
    rows = []
    for image_path, labels_path in read_images_csv(images_csv):
        image = load(image_path, is_label=False, dims=ndim)
        truth = check_same_grid(image, load(labels_path, is_label=True, dims=ndim))
        predicted, jacobian, seconds = transfer(image)
        d = dice(predicted.data, truth.data, labels=chosen)
        row: dict[str, Any] = {"image": image_path.name, "dice_mean": nanmean(d)}
        row.update({f"dice_{k}": v for k, v in d.items()})
        row["hd95"] = mean_hd95(
            predicted.data, truth.data, labels=chosen, spacing=image.spacing, finite_only=True
        )
        row["folding_pct"] = 100.0 * folding_fraction(jacobian)
        row["seconds"] = seconds
        rows.append(row)
    summary: dict[str, Any] = {
        **(meta or {}),
        "images": len(rows),
        "labels": chosen,
        **summarize_rows(rows, {"dice_mean": "dice_mean"}),
        "dice_per_label": per_label_means(rows),
        **summarize_rows(rows, {"hd95_mean": "hd95"}),
        **summarize_rows(
            rows, {"folding_pct": "folding_pct", "seconds_per_image": "seconds"}, sd=False
        ),
    }
    write_metrics(out, rows, summary)
    return summary


def resolve_atlas(
    ckpt: dict[str, Any],
    ndim: int,
    atlas: PathLike | None,
    atlas_labels: PathLike | None,
    checkpoint: PathLike = "checkpoint",
) -> tuple[Image, Image]:
    """The atlas files given, or the atlas stored in the checkpoint when both are omitted.

    Raises:
        InputError: only one of the two files given, unreadable files, another dimensionality,
            non-integer labels or labels on another grid.
    """
    if atlas is None and atlas_labels is None:
        return atlas_images(checkpoint_atlas(ckpt, checkpoint))
    if atlas is None or atlas_labels is None:
        raise InputError("--atlas and --atlas-labels must be given together (or both omitted)")
    image = load(atlas, is_label=False, dims=ndim)
    labels = load(atlas_labels, is_label=True, dims=ndim)
    return image, labels


def evaluate(
    checkpoint: PathLike,
    images_csv: PathLike,
    out: PathLike,
    *,
    atlas: PathLike | None = None,
    atlas_labels: PathLike | None = None,
    labels: Sequence[int] | None = None,
    interp: str = "linear",
) -> dict[str, Any]:
    """Evaluate an LT-Net checkpoint on the labelled images of ``images_csv``.

    The atlas defaults to the one stored in the checkpoint (the training atlas on its working
    grid). Writes ``metrics.csv`` and ``summary.json`` in ``out`` and returns the summary.
    """
    net, ckpt, cfg = load_model(checkpoint)
    shape = tuple(cfg.data.shape)
    atlas_img, atlas_lab = resolve_atlas(ckpt, len(shape), atlas, atlas_labels, checkpoint)
    meta = {
        "checkpoint": str(checkpoint),
        "task": "labeltransfer",
        "role": ckpt.get("role"),
        "step": ckpt.get("step"),
        "params": int(ckpt.get("params", 0)),
    }
    return evaluate_transfer(
        transfer_network(net),
        shape,
        atlas_img,
        atlas_lab,
        images_csv,
        out,
        labels=labels,
        interp=interp,
        meta=meta,
    )


def evaluate_request(
    checkpoint: PathLike, request: EvaluateRequest, out: PathLike
) -> dict[str, Any]:
    """``medistill evaluate`` for an LT-Net checkpoint (the task registry's entry):
    ``request.images_csv`` is required; ``atlas``, ``atlas_labels``, ``labels`` as in
    :func:`evaluate`. ``request`` is a :class:`medistill.tasks.EvaluateRequest`.
    """
    if request.images_csv is None:
        raise InputError("evaluate: a label-transfer checkpoint needs --images-csv")
    return evaluate(
        checkpoint,
        request.images_csv,
        out,
        atlas=request.atlas,
        atlas_labels=request.atlas_labels,
        labels=request.labels,
    )
