"""Summaries of per-case metric values (mean and sd ignoring NaN) and the files they go to.

One schema for every task's evaluation output: ``metrics.csv`` (one row per case) and
``summary.json`` (the summary dict), both written atomically; per-label values are dicts with
string keys (``{"1": 0.8, ...}``), as JSON writes them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.io.atomic import atomic_path
from medistill.metrics._checks import to_numpy
from medistill.typing import ArrayLike, PathLike

__all__ = [
    "nanmean",
    "per_label_means",
    "summarize",
    "summarize_rows",
    "write_metrics",
    "write_summary",
]


def summarize(values: Iterable[float] | ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation of the non-NaN values.

    The standard deviation uses ``ddof=1`` (the spread across cases, as in "mean +- sd" tables);
    it is 0 for a single value. ``inf`` values propagate.

    Args:
        values: per-case values (list, numpy array or torch tensor, any shape; flattened).

    Returns:
        ``(mean, sd)``; ``(nan, nan)`` when no value is defined.
    """
    if isinstance(values, (np.ndarray, torch.Tensor)):
        arr = to_numpy(values, "summarize", "values").ravel()
    else:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd


def nanmean(values: Iterable[float] | Mapping[Any, float] | ArrayLike) -> float:
    """Mean of the non-NaN values (of a mapping: of its values); NaN when none is defined."""
    if isinstance(values, Mapping):
        values = list(values.values())
    return summarize(values)[0]


def summarize_rows(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], *, sd: bool = True
) -> dict[str, float]:
    """Mean (and sd) over rows of each column, ignoring NaN and rows without the column.

    Args:
        rows: one dict per case (e.g. per pair, image or volume).
        columns: summary name -> row column, e.g. ``{"dice_mean": "dice", "sdlogj": "sdlogj"}``.
            The sd goes under the name with ``_mean`` replaced by ``_sd`` (``dice_sd``), or with
            ``_sd`` appended when the name does not end in ``_mean`` (``sdlogj_sd``).
        sd: also give the sample standard deviation (:func:`summarize`).

    Returns:
        The summary entries, in the order of ``columns``; a column no row has is left out.
    """
    out: dict[str, float] = {}
    for name, column in columns.items():
        values = [r[column] for r in rows if column in r]
        if not values:
            continue
        mean, spread = summarize(values)
        out[name] = mean
        if sd:
            out[name[: -len("_mean")] + "_sd" if name.endswith("_mean") else name + "_sd"] = spread
    return out


def per_label_means(rows: Sequence[Mapping[str, Any]], prefix: str = "dice_") -> dict[str, float]:
    """Mean over rows of every per-label column ``<prefix><label>`` (NaN ignored).

    Returns:
        ``{label: mean}`` with string keys (the per-label schema of every ``summary.json``), in
        the order the columns first appear.
    """
    labels = dict.fromkeys(
        k[len(prefix) :]
        for r in rows
        for k in r
        if k.startswith(prefix) and k[len(prefix) :].lstrip("-").isdigit()
    )
    out = {}
    for label in labels:
        out[label] = nanmean(
            [float(r[prefix + label]) for r in rows if r.get(prefix + label) not in (None, "")]
        )
    return out


def write_summary(path: PathLike, summary: Mapping[str, Any]) -> Path:
    """Write a summary dict as indented JSON, atomically (numpy scalars as floats)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))
    return path


def write_metrics(out: PathLike, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write ``out/metrics.csv`` (one row per case; columns: every key, in first-seen order) and
    ``out/summary.json``, each atomically; ``out`` is created when missing."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(out / "metrics.csv") as tmp:
        tmp.write_text(buf.getvalue())
    write_summary(out / "summary.json", summary)
