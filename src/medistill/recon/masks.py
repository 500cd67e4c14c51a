"""1-D Cartesian undersampling masks (whole phase-encode lines), fastMRI conventions.

A mask is a boolean array ``(W,)`` over the last k-space axis in the **centred** layout (DC at
``W // 2``; see :mod:`medistill.recon.kspace`); ``True`` marks a sampled column (a full line of
``H`` samples). Every mask has a fully sampled centre of ``round(W * center_fraction)`` lines,
placed as fastMRI places it (``pad = (W - n + 1) // 2``, lines ``pad .. pad + n - 1``). The default
centre fraction is ``0.32 / acceleration`` (fastMRI's 0.08 at 4x and 0.04 at 8x; 0.064 at 5x).

Kinds (all deterministic given ``seed``):

- ``"random"``: the centre plus uniformly random other lines, **exactly**
  ``round(W / acceleration)`` lines in total.
- ``"equispaced"``: fastMRI ``EquispacedMaskFunc``: the centre plus lines every
  ``a' = acceleration (n - W) / (n acceleration - W)`` columns from a seeded offset, so that the
  expected total is ``W / acceleration``.
- ``"fastmri-random"``: fastMRI ``RandomMaskFunc``: the centre plus each other line with
  probability ``(W / acceleration - n) / (W - n)`` (the acceleration holds on average).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medistill.errors import InputError
from medistill.recon.kspace import Layout, check_layout, dc_index, mask_layout
from medistill.typing import PathLike

MASK_KINDS: tuple[str, ...] = ("random", "equispaced", "fastmri-random")

__all__ = [
    "MASK_KINDS",
    "acceleration_of",
    "center_lines",
    "check_mask",
    "default_center_fraction",
    "load_mask",
    "make_mask",
    "save_mask",
]


def default_center_fraction(acceleration: float) -> float:
    """The fully sampled central fraction of k-space lines used when none is given.

    ``0.32 / acceleration``: fastMRI's 0.08 at 4x and 0.04 at 8x (its ``RandomMaskFunc``
    settings), and 0.064 at 5x, which fastMRI does not define (the same rule, this project's
    choice). With :func:`center_lines` rounding ``W * fraction``:

    ============  ========  ==============  ==============
    acceleration  fraction  lines, W = 128  lines, W = 256
    ============  ========  ==============  ==============
    4x            0.08      10              20
    5x            0.064     8               16
    8x            0.04      5               10
    ============  ========  ==============  ==============

    ``mask.center_fraction = 0`` in a recon config means this default.
    """
    return 0.32 / float(acceleration)


def center_lines(width: int, center_fraction: float) -> np.ndarray:
    """Indices of the fully sampled centre lines (centred layout), at least one (the DC line)."""
    n = max(1, int(round(width * center_fraction)))
    pad = (width - n + 1) // 2
    return np.arange(pad, pad + n)


def make_mask(
    width: int,
    acceleration: float,
    *,
    kind: str = "random",
    center_fraction: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A 1-D line mask in the centred layout.

    Args:
        width: number of phase-encode lines ``W`` (the last image axis).
        acceleration: ``W / sampled lines`` (4, 5, 8, ... ; >= 1).
        kind: ``"random"``, ``"equispaced"`` or ``"fastmri-random"`` (see the module docstring).
        center_fraction: fraction of fully sampled central lines; default
            :func:`default_center_fraction`.
        seed: random seed (the same seed gives the same mask).

    Returns:
        ``(W,)`` boolean mask; ``True`` = sampled.

    Raises:
        InputError: unknown kind, ``width < 2``, ``acceleration < 1`` or a centre fraction
            outside ``(0, 1]``.
    """
    fn = "make_mask"
    if kind not in MASK_KINDS:
        raise InputError(f"{fn}(): 'kind' must be one of {', '.join(MASK_KINDS)}, got {kind!r}")
    if int(width) != width or width < 2:
        raise InputError(f"{fn}(): 'width' must be an integer >= 2, got {width!r}")
    if not acceleration >= 1:
        raise InputError(f"{fn}(): 'acceleration' must be >= 1, got {acceleration!r}")
    cf = default_center_fraction(acceleration) if center_fraction is None else center_fraction
    if not 0 < cf <= 1:
        raise InputError(f"{fn}(): 'center_fraction' must be in (0, 1], got {cf!r}")
    width = int(width)
    mask = np.zeros(width, dtype=bool)
    centre = center_lines(width, cf)
    mask[centre] = True
    n_low = centre.size
    rng = np.random.default_rng(seed)
    if kind == "random":
        total = max(n_low, int(round(width / acceleration)))
        others = np.flatnonzero(~mask)
        mask[rng.choice(others, size=total - n_low, replace=False)] = True
    elif kind == "fastmri-random":
        if width > n_low:
            prob = max(0.0, (width / acceleration - n_low) / (width - n_low))
            mask |= rng.uniform(size=width) < prob
    else:  # equispaced
        if width / acceleration > n_low:
            step = acceleration * (n_low - width) / (n_low * acceleration - width)
            offset = int(rng.integers(0, max(1, round(step))))
            lines = np.around(np.arange(offset, width - 1, step)).astype(int)
            mask[lines[lines < width]] = True
    return mask


def acceleration_of(mask: np.ndarray) -> float:
    """Achieved acceleration: samples in the mask's grid / sampled samples (``W / lines``)."""
    m = np.asarray(mask, dtype=bool)
    n = int(m.sum())
    return float(m.size / n) if n else float("inf")


def check_mask(
    mask: np.ndarray,
    shape: tuple[int, int],
    *,
    layout: Layout = "centered",
    source: str = "mask",
) -> np.ndarray:
    """Validate a user's mask for k-space of ``shape = (H, W)``; return it as a boolean array.

    A mask is ``(W,)`` (lines along the last axis) or ``(H, W)``, finite, binary (0/1 or bool),
    and samples the k-space centre (the DC line / point of ``layout``) -- a mask without centre
    lines cannot be the mask of a DC-CNN reconstruction.

    Raises:
        InputError: wrong shape, non-binary or non-finite values, or no centre line.
    """
    check_layout("check_mask", layout)
    m = np.asarray(mask)
    h, w = shape
    if m.ndim == 2 and 1 in m.shape and m.shape != (h, w):
        m = m.reshape(-1)  # a (1, W) or (W, 1) line mask
    if not ((m.ndim == 1 and m.shape[0] == w) or (m.ndim == 2 and m.shape == (h, w))):
        raise InputError(
            f"{source}: shape {tuple(np.asarray(mask).shape)} does not fit k-space ({h}, {w}); "
            f"expected ({w},) or ({h}, {w})"
        )
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or np.iscomplexobj(m):
            raise InputError(f"{source}: mask must be real 0/1 values, got dtype {m.dtype}")
        if not np.all(np.isfinite(m)):
            raise InputError(f"{source}: mask holds NaN or Inf values")
        if not np.all((m == 0) | (m == 1)):
            raise InputError(f"{source}: mask must hold only 0 and 1")
        m = m.astype(bool)
    centre = (dc_index(w, layout),) if m.ndim == 1 else (dc_index(h, layout), dc_index(w, layout))
    if not m[centre]:
        raise InputError(
            f"{source}: the k-space centre {centre} ({layout} layout) is not sampled; "
            "the mask needs fully sampled centre lines"
        )
    return m


def load_mask(path: PathLike, shape: tuple[int, int], *, layout: Layout = "centered") -> np.ndarray:
    """Read a mask from a ``.npy`` file and validate it with :func:`check_mask`.

    Args:
        path: ``.npy`` file holding a ``(W,)`` or ``(H, W)`` 0/1 array.
        shape: ``(H, W)`` of the k-space it is for.
        layout: layout of the mask (the centre must be sampled there).

    Returns:
        Boolean mask ``(W,)`` or ``(H, W)`` in ``layout``.

    Raises:
        InputError: missing or unreadable file, or an invalid mask.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such mask file")
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{p}: cannot read mask (.npy expected: {err})") from err
    if not isinstance(data, np.ndarray):
        raise InputError(f"{p}: expected one array in a .npy file")
    return check_mask(data, shape, layout=layout, source=str(p))


def save_mask(path: PathLike, mask: np.ndarray, *, layout: Layout = "centered") -> None:
    """Write a mask as ``.npy`` (uint8 0/1) in ``layout`` (masks are made centred)."""
    from medistill.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, mask_layout(np.asarray(mask), "centered", layout).astype(np.uint8))
