"""Applying reconstruction / super-resolution checkpoints: from measured k-space, from magnitude
images (simulated undersampling), and evaluation (PSNR / SSIM / NMSE per volume, CPU latency).

Intensity scaling: the networks were trained on images scaled to [0, 1] per volume. An image
volume is divided by its maximum, processed, and multiplied back; measured k-space is divided by
the maximum of its zero-filled magnitude image (over all slices) and multiplied back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medistill.errors import InputError
from medistill.io.image import Image
from medistill.recon.kspace import Layout, change_layout, check_layout, ifft2, mask_layout
from medistill.recon.masks import check_mask
from medistill.recon.model import ReconModel, load_model, mask_tensor
from medistill.report import time_call
from medistill.typing import PathLike

if TYPE_CHECKING:
    from medistill.tasks import EvaluateRequest

SUMMARY_KEYS = (
    "psnr_mean",
    "psnr_sd",
    "ssim_mean",
    "ssim_sd",
    "nmse_mean",
    "nmse_sd",
    "ms_per_slice",
    "params",
)

__all__ = [
    "SUMMARY_KEYS",
    "evaluate",
    "latency_ms",
    "paired_latency",
    "load_kspace",
    "reconstruct_image",
    "reconstruct_kspace",
    "zero_filled",
]


def load_kspace(path: PathLike) -> np.ndarray:
    """Complex k-space ``(H, W)`` or ``(S, H, W)`` from a ``.npy`` file.

    Raises:
        InputError: missing or unreadable file, real-valued or non-finite data, wrong rank.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such k-space file")
    try:
        k = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{p}: cannot read k-space (.npy expected: {err})") from err
    return check_kspace(k, str(p))


def check_kspace(kspace: np.ndarray, source: str = "kspace") -> np.ndarray:
    """Validate complex k-space ``(H, W)`` or ``(S, H, W)``; returns it as complex64."""
    k = np.asarray(kspace)
    if not np.iscomplexobj(k):
        raise InputError(
            f"{source}: k-space must be complex (got real dtype {k.dtype}); save complex64/128"
        )
    if k.ndim not in (2, 3) or min(k.shape) < 2:
        raise InputError(f"{source}: k-space must be (H, W) or (slices, H, W), got {k.shape}")
    if not np.all(np.isfinite(k)):
        raise InputError(f"{source}: k-space holds {int((~np.isfinite(k)).sum())} NaN/Inf values")
    return k.astype(np.complex64)


def _require(model: ReconModel, sr: bool, what: str) -> None:
    if model.is_sr != sr:
        kind = "super-resolution" if model.is_sr else "reconstruction"
        raise InputError(f"{what} does not apply to a {kind} checkpoint ({model.role})")


def _prepare_kspace(
    kspace: np.ndarray, mask: np.ndarray, layout: Layout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated ``(S, 1, H, W)`` centred masked k-space and the ``(1, 1, 1 | H, W)`` mask."""
    check_layout("reconstruct_kspace", layout)
    k = check_kspace(kspace)
    k = k[None] if k.ndim == 2 else k
    m = check_mask(mask, k.shape[-2:], layout=layout, source="mask")
    m = mask_layout(m, layout, "centered")
    mt = mask_tensor(m)
    kt = change_layout(torch.from_numpy(k), layout, "centered").unsqueeze(1) * mt
    return kt, mt


def zero_filled(kspace: np.ndarray, mask: np.ndarray, *, layout: Layout = "centered") -> np.ndarray:
    """Zero-filled magnitude ``|IFFT(m * k)|`` of ``(H, W)`` or ``(S, H, W)`` k-space (float32).

    Raises:
        InputError: as :func:`reconstruct_kspace`.
    """
    kt, _ = _prepare_kspace(kspace, mask, layout)
    zf = ifft2(kt, "centered").abs()[:, 0].numpy().astype(np.float32)
    return zf[0] if np.asarray(kspace).ndim == 2 else zf


def reconstruct_kspace(
    model: ReconModel,
    kspace: np.ndarray,
    mask: np.ndarray,
    *,
    layout: Layout = "centered",
) -> np.ndarray:
    """DC-CNN reconstruction from measured single-coil Cartesian k-space.

    Args:
        model: a reconstruction checkpoint (DC-CNN).
        kspace: complex ``(H, W)`` or ``(S, H, W)``; unsampled entries are ignored (set to 0).
        mask: ``(W,)`` line mask or ``(H, W)`` mask, 0/1, sampling the k-space centre.
        layout: layout of ``kspace`` and ``mask`` (``"centered"``: fastMRI, DC at ``(H//2, W//2)``;
            ``"uncentered"``: ``numpy.fft.fft2``, DC at ``(0, 0)``).

    Returns:
        ``(H, W)`` or ``(S, H, W)`` float32 real reconstruction.

    Raises:
        InputError: a super-resolution checkpoint, real or non-finite k-space, a mask that does
            not fit or lacks the centre.
    """
    _require(model, False, "k-space reconstruction")
    single = np.asarray(kspace).ndim == 2
    kt, mt = _prepare_kspace(kspace, mask, layout)
    zf = ifft2(kt, "centered").abs()
    scale = float(zf.max())
    if scale <= 0:
        raise InputError("kspace: the sampled k-space is all zero")
    out = []
    for i in range(kt.shape[0]):
        out.append(model.run(zf[i : i + 1] / scale, kt[i : i + 1] / scale, mt))
    result = (torch.cat(out)[:, 0] * scale).numpy().astype(np.float32)
    return result[0] if single else result


def reconstruct_image(
    model: ReconModel, image: Image, acceleration: float | None = None
) -> tuple[Image, Image]:
    """Simulate the acquisition of a magnitude image and reconstruct it (or super-resolve it).

    Each plane of the last array axis (the whole image in 2-D) is processed at its native size:
    recon checkpoints undersample its centred k-space along the last in-plane axis with the
    model's mask settings at ``acceleration`` (default: the trained one); SR checkpoints keep the
    central k-space block.

    Args:
        model: a checkpoint.
        image: 2-D or 3-D intensity image (non-negative values expected).
        acceleration: undersampling factor (recon only).

    Returns:
        ``(output, degraded)``: the reconstruction and the zero-filled / low-resolution input, as
        float32 images on ``image``'s grid and affine.

    Raises:
        InputError: a label map, an all-zero image or an acceleration below 1.
    """
    if image.is_label:
        raise InputError(f"{image.source}: expected an intensity image, got a label map")
    if acceleration is not None and model.is_sr:
        raise InputError("--acceleration does not apply to a super-resolution checkpoint")
    if acceleration is not None and not acceleration >= 1:
        raise InputError(f"acceleration must be >= 1, got {acceleration}")
    data = np.asarray(image.data, dtype=np.float32)
    scale = float(np.abs(data).max())
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"{image.source}: image is all zero or not finite")
    planes = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
    outputs, degraded = [], []
    for plane in planes:
        target = torch.from_numpy(np.ascontiguousarray(plane / scale))[None, None]
        inputs, low = model.inputs(target, acceleration)
        outputs.append(model.run(*inputs)[0, 0].numpy())
        degraded.append(low[0, 0].numpy())

    def restack(items: list[np.ndarray]) -> np.ndarray:
        arr = np.stack(items) * scale
        return (arr[0] if data.ndim == 2 else np.moveaxis(arr, 0, -1)).astype(np.float32)

    return image.with_data(restack(outputs)), image.with_data(restack(degraded))


def latency_ms(
    model: ReconModel, size: int, *, repeats: int = 5, threads: int | None = None
) -> float:
    """CPU milliseconds of one forward pass on one ``size x size`` slice (batch 1): the median of
    ``repeats`` timed runs after one warm-up (:func:`medistill.report.time_call`).

    Args:
        model: a checkpoint (its network is moved to the CPU).
        size: slice side.
        repeats: timed runs after one warm-up.
        threads: PyTorch CPU threads during the measurement (default: unchanged).
    """
    latency = time_call(_slice_call(model, size), repeats=repeats, threads=threads)
    return 1000.0 * latency.median_s


def _slice_call(model: ReconModel, size: int) -> Callable[[], torch.Tensor]:
    """One forward pass of ``model`` (moved to the CPU) on a fixed random ``size x size`` slice
    (batch 1, seed 0): what the latency functions time."""
    model.net.to("cpu")
    target = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    inputs, _ = model.inputs(target)
    return lambda: model.run(*inputs)


def paired_latency(
    reference: ReconModel,
    model: ReconModel,
    size: int,
    *,
    pairs: int = 30,
    threads: int | None = None,
) -> dict[str, float]:
    """CPU time of ``model`` against ``reference`` (e.g. student against teacher) on one
    ``size x size`` slice (batch 1), the two forward passes alternating
    (:func:`medistill.report.time_pairs`): each pair gives one ratio measured milliseconds apart.

    Returns:
        ``{"reference_ms", "model_ms", "ratio_median", "ratio_p10", "ratio_p90", "pairs"}``:
        median milliseconds of each and the median and 10-90th percentiles of the per-pair
        ratio ``model / reference``.
    """
    from medistill.report import time_pairs

    t = time_pairs(
        _slice_call(reference, size), _slice_call(model, size), pairs=pairs, threads=threads
    )
    return {
        "reference_ms": 1000.0 * t.a_median_s,
        "model_ms": 1000.0 * t.b_median_s,
        "ratio_median": t.ratio_median,
        "ratio_p10": t.ratio_p10,
        "ratio_p90": t.ratio_p90,
        "pairs": t.pairs,
    }


def _metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from medistill.metrics import nmse, psnr, ssim_slices

    r = float(target.max())
    return {
        "psnr": psnr(pred, target, data_range=r),
        "ssim": ssim_slices(pred, target, data_range=r),
        "nmse": nmse(pred, target),
    }


def evaluate(
    checkpoint: PathLike | ReconModel,
    images: Sequence[PathLike],
    out: PathLike | None,
    *,
    acceleration: float | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Evaluate a checkpoint on volumes / slices; per-volume metrics and a summary.

    Slices are prepared as for training (:func:`medistill.recon.data.read_slice_set` at the
    model's ``data.size``), degraded (mask at ``acceleration`` / SR block), and compared with the
    target: per volume PSNR and SSIM with ``data_range`` = the target volume's maximum (fastMRI:
    SSIM 7x7 per slice, averaged), NMSE; the same for the degraded input (zero-filled / low-res).

    Args:
        checkpoint: recon checkpoint path (or a loaded :class:`ReconModel`).
        images: files or folders; each file is one volume.
        out: folder for ``metrics.csv`` and ``summary.json`` (``None``: write nothing).
        acceleration: undersampling factor (recon; default the trained one).
        batch_size: slices per forward pass for the metrics (latency is timed at batch 1).

    Returns:
        The summary: ``psnr_mean/sd``, ``ssim_mean/sd``, ``nmse_mean/sd``, the same with an
        ``input_`` prefix, ``ms_per_slice`` (CPU, batch 1, current threads), ``params``, ``role``,
        ``acceleration``, ``size``, ``volumes``, ``slices``.

    Raises:
        InputError: unreadable images, or ``acceleration`` given for an SR checkpoint.
    """
    from medistill.metrics.summary import summarize_rows, write_metrics
    from medistill.recon.data import read_slice_set

    model = checkpoint if isinstance(checkpoint, ReconModel) else load_model(checkpoint)
    if acceleration is not None and model.is_sr:
        raise InputError("--acceleration does not apply to a super-resolution checkpoint")
    if not images:
        raise InputError("evaluate: no images given")
    cfg = model.config
    slices = read_slice_set(list(images), cfg.data.size, min_area=cfg.data.min_area)
    rows = []
    for v, name in enumerate(slices.names):
        target = torch.from_numpy(slices.slices_of(v)).unsqueeze(1)
        preds, lows = [], []
        for i in range(0, target.shape[0], batch_size):
            inputs, low = model.inputs(target[i : i + batch_size], acceleration)
            preds.append(model.run(*inputs))
            lows.append(low)
        t = target[:, 0].numpy().astype(np.float64)
        pred = torch.cat(preds)[:, 0].numpy().astype(np.float64)
        low = torch.cat(lows)[:, 0].numpy().astype(np.float64)
        row: dict[str, Any] = {"volume": name, "slices": int(t.shape[0])}
        row.update(_metrics(pred, t))
        row.update({f"input_{k}": val for k, val in _metrics(low, t).items()})
        rows.append(row)
    summary: dict[str, Any] = {"role": model.role}
    keys = ("psnr", "ssim", "nmse", "input_psnr", "input_ssim", "input_nmse")
    summary.update(summarize_rows(rows, {f"{key}_mean": key for key in keys}))
    summary["ms_per_slice"] = latency_ms(model, cfg.data.size)
    summary["params"] = model.params
    summary["acceleration"] = None if model.is_sr else float(acceleration or cfg.mask.acceleration)
    summary["sr_factor"] = cfg.sr.factor if model.is_sr else None
    summary["size"] = cfg.data.size
    summary["volumes"] = len(rows)
    summary["slices"] = len(slices)
    summary["threads"] = torch.get_num_threads()
    if out is not None:
        write_metrics(out, rows, summary)
    return summary


def evaluate_request(
    checkpoint: PathLike, request: EvaluateRequest, out: PathLike
) -> dict[str, Any]:
    """``medistill evaluate`` for a reconstruction / SR checkpoint (the task registry's entry):
    ``request.images`` is required; ``acceleration`` as in :func:`evaluate`. ``request`` is a
    :class:`medistill.tasks.EvaluateRequest`.
    """
    if not request.images:
        raise InputError("evaluate: a reconstruction checkpoint needs --images")
    return evaluate(checkpoint, request.images, out, acceleration=request.acceleration)
