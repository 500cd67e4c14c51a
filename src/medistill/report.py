"""The report kit of the demos and benchmarks: self-contained HTML reports (tables and matplotlib
figures embedded as base64 PNG), the Dice bar figure, mid-plane views, tissue names, a stopwatch
for the stages of a run and the one CPU latency timer.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.io.atomic import atomic_path
from medistill.typing import PathLike


def figure_to_data_uri(fig: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return "-"
        return f"{value:.4g}"
    return html.escape(str(value))


def html_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """An HTML table of ``rows`` (dicts) with the given columns."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r.get(c, '-'))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""


def write_report(path: PathLike, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write an HTML page of ``(heading, html body)`` sections atomically; returns the path."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def timings_list(timings_s: Mapping[str, float]) -> str:
    """An HTML list of stage timings (``{stage: seconds}``, e.g. :meth:`Stopwatch.total`)."""
    items = "".join(f"<li>{html.escape(k)}: {v:.0f} s</li>" for k, v in timings_s.items())
    return f"<ul>{items}</ul>"


def img_tag(uri: str, caption: str) -> str:
    """A ``<figure>`` with an embedded image and caption."""
    return f"<figure><img src='{uri}'><figcaption>{html.escape(caption)}</figcaption></figure>"


# ----------------------------------------------------------------------------- figures
TISSUE_NAMES: dict[int, str] = {1: "CSF", 2: "GM", 3: "WM"}
"""Short names of the tissue labels (:data:`medistill.data.synthesis.TISSUE_CLASSES`) for plots
and table columns."""


def label_name(label: int | str) -> str:
    """The tissue name of a label value (``"GM"`` for 2), else the value as text."""
    text = str(label)
    return TISSUE_NAMES.get(int(text), text) if text.lstrip("-").isdigit() else text


def mid_plane(volume: np.ndarray) -> np.ndarray:
    """A 2-D image as it is, or the middle plane of a 3-D volume along its last array axis (the
    axial plane of a RAS grid); rotated for display with the second array axis (anterior) up."""
    data = volume if volume.ndim == 2 else volume[:, :, volume.shape[2] // 2]
    return np.rot90(data)


def dice_bar_figure(rows: Sequence[Mapping[str, Any]]) -> str:
    """Grouped bars of mean Dice per label, one bar colour per row (model), as a data URI.

    Args:
        rows: dicts with ``model`` (the legend) and ``dice_per_label`` (``{"1": dice, ...}``,
            string keys as in every ``summary.json``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({str(k) for r in rows for k in r.get("dice_per_label", {})}, key=_label_key)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        per_label = {str(k): v for k, v in row.get("dice_per_label", {}).items()}
        values = [per_label.get(k, np.nan) for k in labels]
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=row["model"])
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
    ax.set_xticklabels([label_name(k) for k in labels])
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    return figure_to_data_uri(fig)


def _label_key(label: str) -> tuple[int, str]:
    return (int(label), "") if label.lstrip("-").isdigit() else (0, label)


# ----------------------------------------------------------------------------- timing
class Stopwatch:
    """Wall-clock seconds of the named stages of a run.

    Example::

        watch = Stopwatch()
        with watch.stage("train teacher"):
            ...
        watch.timings_s  # {"train teacher": 12.3}; watch.total() adds "total"
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.timings_s: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body under ``name`` (seconds; a repeated name adds up)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = self.timings_s.get(name, 0.0) + time.perf_counter() - t

    def total(self) -> dict[str, float]:
        """The stage timings plus ``total``: seconds since the stopwatch was made."""
        return {**self.timings_s, "total": time.perf_counter() - self.start}


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's CPU threads set to ``threads`` for the body (``None``/0: unchanged), the previous
    count restored afterwards, also on an exception."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Latency:
    """Seconds of the timed calls of :func:`time_call`.

    Attributes:
        median_s: median seconds of one call (the figure reported everywhere).
        min_s: the fastest call, seconds.
        repeats: timed calls.
    """

    median_s: float
    min_s: float
    repeats: int

    def as_dict(self) -> dict[str, float]:
        """``{"median_s", "min_s", "repeats"}`` for JSON summaries."""
        return asdict(self)


def time_call(
    fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, threads: int | None = None
) -> Latency:
    """CPU latency of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    The one latency timer of medistill (registration ``bench`` and the recon latency use it);
    its headline is the median, robust to a few calls slowed by other load on the machine.

    Args:
        fn: the call to time (e.g. one forward pass under ``torch.inference_mode``).
        repeats: timed calls (at least 1).
        warmup: untimed calls first (allocations, lazy initialisation).
        threads: PyTorch CPU threads during the measurement (``None``/0: unchanged).

    Returns:
        The :class:`Latency` of one call, in seconds.
    """
    with cpu_threads(threads):
        for _ in range(max(0, warmup)):
            fn()
        times = []
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return Latency(statistics.median(times), min(times), len(times))


@dataclass(frozen=True)
class PairedLatency:
    """Two calls timed in alternation by :func:`time_pairs` (seconds; ratio ``b / a``).

    Attributes:
        a_median_s: median seconds of one call of ``a``.
        b_median_s: median seconds of one call of ``b``.
        ratio_median: median over the pairs of ``b``'s time / ``a``'s time in the same pair.
        ratio_p10: 10th percentile of those ratios.
        ratio_p90: 90th percentile of those ratios.
        pairs: timed pairs.
    """

    a_median_s: float
    b_median_s: float
    ratio_median: float
    ratio_p10: float
    ratio_p90: float
    pairs: int

    def as_dict(self) -> dict[str, float]:
        """The fields as a dict for JSON summaries."""
        return asdict(self)


def time_pairs(
    a: Callable[[], Any],
    b: Callable[[], Any],
    *,
    pairs: int = 30,
    warmup: int = 2,
    threads: int | None = None,
) -> PairedLatency:
    """CPU latency of ``b`` relative to ``a``, robust to a machine whose speed drifts: the calls
    alternate (``a, b, b, a, a, b, ...``: each goes first in half the pairs) and each pair gives
    one ratio ``time(b) / time(a)`` measured milliseconds apart, so a slow spell of the machine
    slows both calls of a pair rather than one side of the comparison.

    Args:
        a: the reference call (e.g. the teacher's forward pass).
        b: the compared call (e.g. the student's).
        pairs: timed pairs (at least 1).
        warmup: untimed calls of each first.
        threads: PyTorch CPU threads during the measurement (``None``/0: unchanged).

    Returns:
        :class:`PairedLatency` with both medians and the median and 10-90th percentiles of the
        per-pair ratio.
    """
    with cpu_threads(threads):
        for _ in range(max(0, warmup)):
            a()
            b()
        ta, tb = [], []
        for i in range(max(1, pairs)):
            order = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
            for fn, times in order:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
    ratios = sorted(y / x for x, y in zip(ta, tb, strict=True))

    def pct(q: float) -> float:  # linear interpolation between order statistics
        pos = q * (len(ratios) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ratios) - 1)
        return ratios[lo] + (ratios[hi] - ratios[lo]) * (pos - lo)

    return PairedLatency(
        statistics.median(ta),
        statistics.median(tb),
        statistics.median(ratios),
        pct(0.1),
        pct(0.9),
        len(ratios),
    )
