"""Registering images on their own grids: working grid, initial alignment, field back to native.

The pipeline shared by every way to register (a network, the optimiser, a network refined by
the optimiser) and by label transfer: intensities to [0, 1] (percentile clip), a working grid
around the FIXED image's content, an initial translation that matches the intensity centres of
mass (so scans that are not aligned in world space start close), a *field function* on the
working grid, and the composed transform brought back to the fixed image's original grid through
world space:

    D(p) = t + A_w[:3,:3] u_w(A_w^-1 p)        (world displacement in mm, RAS, at fixed point p)

where ``u_w`` is the field in working-grid voxels and ``t`` the initial translation. The fixed
point ``p`` corresponds to the moving point ``p + D(p)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.io import Grid, Image, WorkingGrid, content_threshold, save, save_nifti
from medistill.spatial.field import Field
from medistill.spatial.grid import voxel_to_normalized
from medistill.spatial.jacobian import jacobian_det
from medistill.spatial.warp import resample
from medistill.spatial.world import itk_displacement_nifti, resample_disp_between_grids
from medistill.typing import PathLike

__all__ = [
    "INITIAL",
    "LABEL_INTERPOLATIONS",
    "OUTPUTS",
    "RANGE_PERCENTILES",
    "FieldFunction",
    "Registration",
    "WorkingPair",
    "centre_of_mass_mm",
    "check_outputs",
    "finish_registration",
    "moving_coordinates",
    "normalise",
    "outside_mask",
    "prepare_pair",
    "register_images",
    "resample_labels",
    "robust_percentiles",
]

INITIAL = ("com", "none")
LABEL_INTERPOLATIONS = ("nearest", "linear")
OUTPUTS = ("warped", "warped_labels", "disp_voxel", "disp_mm", "jacobian")
"""What :meth:`Registration.save` can write, in order."""

FieldFunction = Callable[[Tensor, Tensor], Tensor]
"""``(fixed, moving)`` working images ``(1, 1, *S)`` -> displacement ``(1, ndim, *S)`` in
working-grid voxels (``warped(x) = moving(x + u(x))``)."""


@dataclass
class Registration:
    """A registration result on the fixed image's original grid.

    Attributes:
        fixed: the fixed image.
        field: the transform as a :class:`~medistill.spatial.field.Field` on the fixed grid, in
            voxels: fixed voxel ``y`` corresponds to moving world point ``A_f (y + d(y))``
            (``disp_voxel`` is its array).
        warped: moving image resampled onto the fixed grid (original intensities); None when
            the registration was asked for other outputs only.
        warped_labels: moving labels resampled onto the fixed grid, or None.
        jacobian: ``(*fixed.shape)`` Jacobian determinant of the transform; None when not
            asked for.
        translation_mm: initial world translation (RAS mm).
        seconds_network: time of the field function (network forward pass or optimisation).
        seconds_total: time of the whole pipeline (no file I/O).
        extra: method-specific results (e.g. the optimiser's world affine).
    """

    fixed: Image
    field: Field
    warped: Image | None
    warped_labels: Image | None
    jacobian: np.ndarray | None
    translation_mm: np.ndarray
    seconds_network: float
    seconds_total: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def disp_voxel(self) -> np.ndarray:
        """``(ndim, *fixed.shape)`` displacement in fixed-grid voxels (channel k along fixed
        array axis k)."""
        return self.field.to("voxel").data

    def moving_points(self, fixed_points: np.ndarray) -> np.ndarray:
        """World points (mm, RAS) in the moving image for fixed-grid voxel indices ``(N, ndim)``."""
        return self.field.points(fixed_points)

    def save(
        self, out: PathLike, *, outputs: Sequence[str] = OUTPUTS, compress: bool = True
    ) -> list[Path]:
        """Write the chosen ``outputs`` (default all of :data:`OUTPUTS`: warped, warped_labels,
        disp_voxel, disp_mm, jacobian) into ``out`` as ``NAME.nii.gz`` (``NAME.nii`` with
        ``compress=False``: larger files, written several times faster). ``warped_labels`` is
        written only when the registration has labels.

        Raises:
            InputError: an output name not in :data:`OUTPUTS`, or the warped image or the
                Jacobian asked for but not computed (see ``outputs`` of
                :func:`finish_registration`).
        """
        chosen = check_outputs(outputs)
        missing = [n for n in ("warped", "jacobian") if n in chosen and getattr(self, n) is None]
        if missing:
            raise InputError(f"this registration did not compute {', '.join(missing)}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        aff = self.fixed.affine
        suffix = ".nii.gz" if compress else ".nii"
        written: list[Path] = []

        def target(name: str) -> Path:
            written.append(out / f"{name}{suffix}")
            return written[-1]

        if "warped" in chosen:
            save(self.warped, target("warped"))
        if "warped_labels" in chosen and self.warped_labels is not None:
            save(self.warped_labels, target("warped_labels"))
        if "disp_voxel" in chosen:
            vox = np.moveaxis(self.disp_voxel, 0, -1)[..., None, :].astype(np.float32)
            if self.fixed.ndim == 2:
                vox = vox[:, :, None]
            save_nifti(vox, aff, target("disp_voxel"), intent=1007)
        if "disp_mm" in chosen:
            itk = itk_displacement_nifti(self.disp_voxel.astype(np.float32), aff)
            save_nifti(np.asarray(itk.dataobj), aff, target("disp_mm"), intent=1007)
        if "jacobian" in chosen:
            save_nifti(self.jacobian.astype(np.float32), aff, target("jacobian"))
        return written


def check_outputs(outputs: Sequence[str] | str) -> tuple[str, ...]:
    """The output names of a list or a comma-separated string (``"all"`` = :data:`OUTPUTS`),
    checked, in :data:`OUTPUTS` order.

    Raises:
        InputError: an unknown name, or none at all.
    """
    names = outputs.split(",") if isinstance(outputs, str) else list(outputs)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return OUTPUTS
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise InputError(
            f"--outputs must be 'all' or a comma-separated subset of {', '.join(OUTPUTS)}; "
            f"got {','.join(names) or '(nothing)'!r}"
        )
    return tuple(n for n in OUTPUTS if n in names)


_SAMPLE = 1 << 20


def robust_percentiles(data: np.ndarray, q: list[float]) -> np.ndarray:
    """Percentiles ``q`` of ``data``, from an evenly strided subsample of at most about 2^20
    voxels for large volumes (the same voxels every time; robust percentiles barely move)."""
    data = np.asarray(data)
    step = 1
    while data.size / step**data.ndim > _SAMPLE:
        step += 1
    sample = data[(slice(None, None, step),) * data.ndim] if step > 1 else data
    # np.percentile's linear method on a sorted copy: numpy's vectorised sort is several times
    # faster than the partition np.percentile runs for several percentiles at once
    ordered = np.sort(sample, axis=None)
    if ordered.size == 0 or np.isnan(ordered[-1]):
        return np.percentile(sample, q)
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (ordered.size - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, ordered.size - 1)
    a, b = ordered[low].astype(np.float64), ordered[high].astype(np.float64)
    return a + (b - a) * (pos - low)


RANGE_PERCENTILES = [0.5, 1.0, 99.0, 99.5]
"""The percentiles the pipeline uses: 0.5/99.5 for normalisation, 1/99 for the centre of mass
and the content box; :func:`prepare_pair` takes them in one pass per image."""


def normalise(
    data: np.ndarray,
    lower: float = 0.5,
    upper: float = 99.5,
    *,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """Clip to robust percentiles (:func:`robust_percentiles`) and scale to [0, 1] (float32),
    as :func:`medistill.io.normalize_percentile` does for the whole volume. ``bounds``: the
    ``lower`` and ``upper`` percentiles when the caller has them already."""
    data = np.asarray(data, dtype=np.float32)
    lo, hi = robust_percentiles(data, [lower, upper]) if bounds is None else bounds
    if hi <= lo:
        return np.zeros_like(data)
    out = np.clip(data, np.float32(lo), np.float32(hi))  # float32 bounds: a float32 result
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def centre_of_mass_mm(image: Image, *, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Intensity-weighted centre (world mm) of the voxels above 5 % of the robust range; weights
    are capped at the 99th percentile, so a few extreme voxels cannot move the centre.
    ``bounds``: the 1st and 99th percentiles when the caller has them already."""
    data = np.asarray(image.data, dtype=np.float32)
    lo, hi = robust_percentiles(data, [1, 99]) if bounds is None else bounds
    weights = np.clip(np.minimum(data, hi) - content_threshold(lo, hi), 0, None)
    total = float(weights.sum(dtype=np.float64))
    if total <= 0:
        weights, total = np.ones_like(data), float(data.size)
    # each coordinate from the marginal along its axis (as ndimage.center_of_mass, faster)
    axes = range(data.ndim)
    com = np.array(
        [
            np.dot(
                weights.sum(axis=tuple(b for b in axes if b != a), dtype=np.float64),
                np.arange(data.shape[a], dtype=np.float64),
            )
            / total
            for a in axes
        ]
    )
    return image.index_to_world(com[None])[0]


def moving_coordinates(fixed: Image, moving: Image, disp_voxel: np.ndarray) -> np.ndarray:
    """Voxel coordinates in ``moving`` (float32, ``(ndim, *fixed.shape)``) of every fixed voxel
    ``y`` displaced by ``disp_voxel(y)`` (fixed-grid voxels), through world space."""
    ndim = fixed.ndim
    # one affine: fixed voxel -> world -> moving voxel, applied to y + u(y)
    m = np.linalg.inv(moving.affine) @ fixed.affine
    lin, off = m[:ndim, :ndim], m[:ndim, 3]
    idx = np.indices(fixed.shape, dtype=np.float32)
    idx += disp_voxel.astype(np.float32)
    out = np.tensordot(lin.astype(np.float32), idx, axes=1)
    out += off.astype(np.float32).reshape((ndim,) + (1,) * ndim)
    return out


def outside_mask(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Voxels whose coordinates ``(ndim, *T)`` fall more than half a voxel outside ``shape``."""
    outside = np.zeros(coords.shape[1:], dtype=bool)
    for axis in range(len(shape)):
        outside |= (coords[axis] < -0.5) | (coords[axis] > shape[axis] - 0.5)
    return outside


def sampling_grid(coords: np.ndarray, shape: tuple[int, ...]) -> Tensor:
    """Normalised ``grid_sample`` coordinates ``(1, ndim, *T)`` of voxel coordinates ``coords``
    ``(ndim, *T)`` into a grid of ``shape`` (:func:`~medistill.spatial.grid.voxel_to_normalized`),
    for :func:`~medistill.spatial.warp.resample` with ``normalized=True``: computed once, then
    shared by every volume sampled at the same points (image, labels, each label's indicator)."""
    crd = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32))
    return voxel_to_normalized(crd.movedim(0, -1), shape)[None].movedim(-1, 1)


def _sample(volume: Tensor, grid: Tensor, mode: str) -> Tensor:
    """``volume`` ``(*S)`` sampled at ``grid`` (:func:`sampling_grid`), border padding."""
    return resample(volume[None, None], grid, mode=mode, padding="border", normalized=True)[0, 0]


def _nearest(data: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``data`` at the nearest voxel of each point ``coords`` ``(ndim, *T)`` (clamped into the
    grid; the caller zeroes the points outside): a direct gather, exact for any label value and
    several times faster than ``grid_sample``'s nearest mode (ties at exactly half a voxel
    round to even, as there)."""
    shape = data.shape
    flat = np.zeros(coords.shape[1:], dtype=np.int64)
    for axis, size in enumerate(shape):
        idx = np.rint(coords[axis]).astype(np.int64)
        np.clip(idx, 0, size - 1, out=idx)
        flat *= size
        flat += idx
    return np.ascontiguousarray(data).reshape(-1)[flat]


def resample_labels(
    labels: np.ndarray,
    coords: np.ndarray,
    *,
    interp: str = "nearest",
    grid: Tensor | None = None,
    outside: np.ndarray | None = None,
) -> np.ndarray:
    """A label map sampled at voxel coordinates ``coords`` ``(ndim, *T)`` of its grid; 0 outside.

    ``interp``: ``"nearest"`` or ``"linear"`` (each label's indicator interpolated linearly, one
    label at a time to bound memory, then the most probable label: smoother boundaries).
    ``grid`` / ``outside``: :func:`sampling_grid` and :func:`outside_mask` of ``coords`` when the
    caller has them already (``grid`` is used by linear interpolation only). Returns int32 labels
    of shape ``T``.
    """
    if interp not in LABEL_INTERPOLATIONS:
        raise InputError(
            f"label interpolation must be one of {LABEL_INTERPOLATIONS}, got {interp!r}"
        )
    shape = tuple(np.shape(labels))
    if grid is None and interp == "linear":
        grid = sampling_grid(coords, shape)
    data = np.asarray(labels)
    if interp == "nearest":
        out = _nearest(data, coords)
    else:
        lab = torch.from_numpy(data)
        values = np.unique(data).astype(np.int64)
        best = torch.full(grid.shape[2:], -1.0)
        arg = torch.zeros(grid.shape[2:], dtype=torch.long)
        for i, value in enumerate(values.tolist()):
            prob = _sample((lab == value).float(), grid, "linear")
            better = prob > best
            best = torch.where(better, prob, best)
            arg = torch.where(better, torch.full_like(arg, i), arg)
        out = values[arg.numpy()]
    out = out.astype(np.int32)
    out[outside_mask(coords, shape) if outside is None else outside] = 0
    return out


@dataclass
class WorkingPair:
    """A pair on the working grid, ready for a field function.

    Attributes:
        grid: the working grid (around the fixed image's content).
        fixed, moving: ``(1, 1, *S)`` float32 images, intensities in [0, 1].
        translation_mm: initial world translation (RAS mm) applied to the moving image.
        moving_grid: the working grid moved by ``translation_mm``: its voxel ``y`` is the world
            point of the moving image that working voxel ``y`` starts from (moving images and
            label maps are resampled onto it).
    """

    grid: WorkingGrid
    fixed: Tensor
    moving: Tensor
    translation_mm: np.ndarray
    moving_grid: Grid

    def moving_labels(self, labels: Image) -> Tensor:
        """A label map of the moving image on the working grid (nearest), ``(1, 1, *S)``."""
        return self._labels(labels, self.moving_grid)

    def fixed_labels(self, labels: Image) -> Tensor:
        """A label map of the fixed image on the working grid (nearest), ``(1, 1, *S)``."""
        return self._labels(labels, self.grid)

    @staticmethod
    def _labels(labels: Image, onto: Grid) -> Tensor:
        data = onto.sample(labels.data, labels.grid, order=0)
        return torch.from_numpy(np.asarray(data).astype(np.int64))[None, None]


def prepare_pair(
    fixed: Image,
    moving: Image,
    grid: WorkingGrid,
    *,
    initial: str = "com",
    fixed_percentiles: np.ndarray | None = None,
) -> WorkingPair:
    """Normalise both images, match centres of mass (``initial="com"``) and resample them onto
    ``grid`` (which should lie around the fixed image's content). ``fixed_percentiles``: the
    fixed image's :data:`RANGE_PERCENTILES` when the caller has them already."""
    if initial not in INITIAL:
        raise InputError(f"initial alignment must be 'com' or 'none', got {initial!r}")
    fp = fixed_percentiles
    fp = robust_percentiles(fixed.data, RANGE_PERCENTILES) if fp is None else fp
    mp = robust_percentiles(moving.data, RANGE_PERCENTILES)
    t = np.zeros(3)
    if initial == "com":
        t = centre_of_mass_mm(moving, bounds=(mp[1], mp[2]))
        t = t - centre_of_mass_mm(fixed, bounds=(fp[1], fp[2]))
        if fixed.ndim == 2:
            t[2] = 0.0
    shifted = grid.translated(t)  # working voxel -> world point in the moving image
    f_work = grid.sample(normalise(fixed.data, bounds=(fp[0], fp[3])), fixed.grid)
    m_work = shifted.sample(normalise(moving.data, bounds=(mp[0], mp[3])), moving.grid)
    return WorkingPair(
        grid=grid,
        fixed=torch.from_numpy(np.ascontiguousarray(f_work, dtype=np.float32))[None, None],
        moving=torch.from_numpy(np.ascontiguousarray(m_work, dtype=np.float32))[None, None],
        translation_mm=t,
        moving_grid=shifted,
    )


def finish_registration(
    pair: WorkingPair,
    disp_work: Tensor,
    fixed: Image,
    moving: Image,
    *,
    moving_labels: Image | None = None,
    label_interp: str = "nearest",
    seconds_network: float = 0.0,
    started: float | None = None,
    outputs: Sequence[str] = OUTPUTS,
) -> Registration:
    """Bring a working-grid field ``(1, ndim, *S)`` back to the fixed grid; warp the moving image
    (linear) and its labels (``label_interp``) there; Jacobian determinant of the transform.

    ``outputs`` (names of :data:`OUTPUTS`): what is needed; the warped image, the warped labels
    and the Jacobian are computed only when named (the field always is), so a cohort that
    writes labels only does not pay for the rest."""
    chosen = check_outputs(outputs)
    ndim = fixed.ndim
    t0 = time.perf_counter() if started is None else started
    disp_f = resample_disp_between_grids(
        disp_work.detach().float().cpu(), pair.grid.affine, fixed.affine, fixed.shape
    )
    lin = fixed.affine[:ndim, :ndim]
    t_vox = np.linalg.solve(lin, pair.translation_mm[:ndim]).astype(np.float32)
    disp_t = disp_f[0] + torch.from_numpy(t_vox).view(ndim, *[1] * ndim)
    jac = jacobian_det(disp_t[None])[0, 0].numpy() if "jacobian" in chosen else None
    disp_f = disp_t.numpy()
    want_labels = moving_labels is not None and "warped_labels" in chosen
    warped = warped_labels = None
    if "warped" in chosen or want_labels:
        coords = moving_coordinates(fixed, moving, disp_f)
        outside = outside_mask(coords, moving.shape)
        grid = None
        if "warped" in chosen or label_interp == "linear":
            grid = sampling_grid(coords, moving.shape)  # once for the image and its labels
        if "warped" in chosen:
            img = torch.from_numpy(np.ascontiguousarray(moving.data, dtype=np.float32))
            data = _sample(img, grid, "linear").numpy()
            data[outside] = 0
            warped = Image(data, fixed.affine.copy(), False, "warped")
        if want_labels:
            lab = resample_labels(
                moving_labels.data, coords, interp=label_interp, grid=grid, outside=outside
            )
            warped_labels = Image(lab, fixed.affine.copy(), True, "warped_labels")
    return Registration(
        fixed=fixed,
        field=Field(disp_f, fixed.grid, "voxel"),
        warped=warped,
        warped_labels=warped_labels,
        jacobian=jac,
        translation_mm=pair.translation_mm,
        seconds_network=seconds_network,
        seconds_total=time.perf_counter() - t0,
    )


def register_images(
    model: FieldFunction | torch.nn.Module,
    fixed: Image,
    moving: Image,
    *,
    shape: tuple[int, ...],
    moving_labels: Image | None = None,
    initial: str = "com",
    margin: float = 0.1,
    label_interp: str = "nearest",
    outputs: Sequence[str] = OUTPUTS,
) -> Registration:
    """Register ``moving`` to ``fixed`` with a network (or any field function) on a working grid.

    Args:
        model: a trained registration network ``model(fixed, moving).disp`` in eval mode (e.g.
            :class:`~medistill.nets.Cascade`), or a :data:`FieldFunction`.
        fixed, moving: images (any grids, orientations, spacings; same dimensionality as the model).
        shape: working grid the model was trained on.
        moving_labels: label map on the moving image's grid, warped if given.
        initial: ``"com"`` matches intensity centres of mass first; ``"none"`` trusts world space.
        margin: working-grid margin around the fixed content (as in training).
        label_interp: ``"nearest"`` or ``"linear"`` (one-hot, then argmax).
        outputs: what to compute besides the field (:func:`finish_registration`).

    Raises:
        InputError: dimensionality of images and model differ.
    """
    ndim = len(shape)
    for name, img in (("fixed", fixed), ("moving", moving)):
        if img.ndim != ndim:
            raise InputError(
                f"{img.source}: {name} image is {img.ndim}-D "
                f"but the model registers {ndim}-D images"
            )
    t0 = time.perf_counter()
    fp = robust_percentiles(fixed.data, RANGE_PERCENTILES)
    threshold = content_threshold(fp[1], fp[2])  # the 1st and 99th of RANGE_PERCENTILES
    grid = WorkingGrid.around(fixed, shape, margin=margin, threshold=threshold)
    pair = prepare_pair(fixed, moving, grid, initial=initial, fixed_percentiles=fp)
    t1 = time.perf_counter()
    if isinstance(model, torch.nn.Module):
        # a Cascade's displacement() skips warping the moving image on the working grid
        run = getattr(model, "displacement", None)
        with torch.inference_mode():
            disp = run(pair.fixed, pair.moving) if run else model(pair.fixed, pair.moving).disp
            disp_w = disp.float()
    else:
        disp_w = model(pair.fixed, pair.moving)
    seconds = time.perf_counter() - t1
    return finish_registration(
        pair,
        disp_w,
        fixed,
        moving,
        moving_labels=moving_labels,
        label_interp=label_interp,
        seconds_network=seconds,
        started=t0,
        outputs=outputs,
    )
