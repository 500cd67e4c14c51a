"""Recursive cascaded registration networks (Zhao et al., ICCV 2019) and their builders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medistill.errors import InputError
from medistill.nets._layers import check_ndim, check_option, no_autocast
from medistill.nets.affine import AffineStem, SmallAffineStem
from medistill.nets.ldr import LDRStudent, LDRStudentFast
from medistill.nets.voxelmorph import VoxelMorph
from medistill.nets.vtn import VTN
from medistill.spatial import compose, upsample_disp, warp

__all__ = [
    "DOWNSAMPLES",
    "REGISTRATION_ROLES",
    "STUDENT_VARIANTS",
    "Cascade",
    "CascadeOutput",
    "build_registration_network",
    "build_student",
    "build_teacher",
]

STUDENT_VARIANTS = ("ldr", "fast")
"""Student subnetworks: ``"ldr"`` (:class:`LDRStudent`), ``"fast"`` (:class:`LDRStudentFast`)."""
DOWNSAMPLES = (1, 2)
"""Resolution factors at which a :class:`Cascade` may run its stages."""
REGISTRATION_ROLES = ("teacher", "student", "voxelmorph")
"""The registration networks a checkpoint's ``role`` names (:func:`build_registration_network`)."""


class CascadeOutput(NamedTuple):
    """What :class:`Cascade` returns.

    Attributes:
        disp: ``(B, ndim, *S)`` final composed displacement in voxels (affine included).
        warped: ``(B, C, *S)`` the original moving image warped once by ``disp``.
        increments: each deformable cascade's own displacement ``u_k`` ``(B, ndim, *S)``, in
            the frame of the image it saw (for the smoothness loss).
        affine: ``(A, b)`` of the affine stem, ``(B, ndim, ndim)`` and ``(B, ndim)`` voxels,
            or ``None`` without a stem.
    """

    disp: Tensor
    warped: Tensor
    increments: list[Tensor]
    affine: tuple[Tensor, Tensor] | None


class Cascade(nn.Module):
    """Recursive cascade of registration subnetworks, optionally after an affine stem.

    The affine stem (if any) maps ``(fixed, moving)`` to ``(u_0, A, b)``. Cascade ``k`` sees
    ``(fixed, warp(moving, agg_{k-1}))`` and predicts the increment ``u_k``. The composed
    field is ``agg_0 = u_0``, then, after an affine stem, in closed form
    ``agg_1(x) = u_0(x + u_1(x)) + u_1(x) = A u_1(x) + u_0(x)`` (exact, since ``u_0`` is
    affine; no border clamping), and ``agg_k = compose(agg_{k-1}, u_k)``, i.e.
    ``agg_k(x) = agg_{k-1}(x + u_k(x)) + u_k(x)`` with linear interpolation, otherwise. The
    original moving image is always warped by the composed field (one interpolation), and
    gradients flow through the whole chain.

    With ``downsample = f > 1`` every stage runs on a coarser grid: ``fixed`` and ``moving`` are
    average-pooled by ``f`` along every axis, the stages register them there, and the composed
    field is brought back to the input grid by :func:`~medistill.spatial.upsample_disp` (linear,
    values rescaled to input voxels) before the original moving image is warped once at full
    resolution. This is a CPU-latency design: the networks' cost falls by about ``f^ndim``
    while the output stays a dense field on the input grid. The increments and the affine
    parameters then live on the coarse grid (``b`` in coarse voxels; ``A`` is the same map).
    The coarse and input grids are related as :func:`~medistill.spatial.upsample_disp` relates
    them (corner voxel centres shared, e.g. ``127 / 63`` per coarse voxel at 64 -> 128) rather
    than by the pooling's exact geometry (factor 2, half-voxel offset): a difference below half
    a voxel, which end-to-end training on the full-resolution warp absorbs.

    Args:
        subnets: deformable subnetworks, each ``net(fixed, moving) -> (B, ndim, *S)``.
        affine: affine stem ``stem(fixed, moving) -> (disp, A, b)``, or ``None``.
        downsample: 1 (stages at the input resolution) or 2 (at half resolution).

    Raises:
        InputError: if there is neither a subnetwork nor an affine stem, or on another
            ``downsample``.
    """

    def __init__(
        self,
        subnets: Sequence[nn.Module],
        affine: nn.Module | None = None,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        if not subnets and affine is None:
            raise InputError("Cascade(): need at least one subnetwork or an affine stem, got none")
        if isinstance(downsample, bool) or downsample not in DOWNSAMPLES:
            raise InputError(
                f"Cascade(): 'downsample' must be one of {DOWNSAMPLES}, got {downsample!r}"
            )
        self.subnets = nn.ModuleList(subnets)
        self.affine = affine
        self.downsample = int(downsample)

    @property
    def size_multiple(self) -> int:
        """Every spatial input size must be a multiple of this."""
        stages = [*self.subnets, *([self.affine] if self.affine is not None else [])]
        inner = max((int(getattr(m, "size_multiple", 1)) for m in stages), default=1)
        return inner * self.downsample

    def forward(self, fixed: Tensor, moving: Tensor) -> CascadeOutput:
        """Register ``moving`` to ``fixed``.

        Args:
            fixed: ``(B, C_f, *S)`` fixed image.
            moving: ``(B, C_m, *S)`` moving image (sizes as the subnetworks require).

        Returns:
            :class:`CascadeOutput` with the composed displacement (voxels, backward
            convention), the warped moving image, the increments and the affine parameters.
        """
        return self._run(fixed, moving, final_warp=True)

    def displacement(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """The composed displacement of :meth:`forward` (voxels, ``(B, ndim, *S)``) without
        warping the moving image at the end: what inference on native grids needs (one
        resampling of the moving image fewer)."""
        return self._run(fixed, moving, final_warp=False).disp

    def _run(self, fixed: Tensor, moving: Tensor, *, final_warp: bool) -> CascadeOutput:
        full_moving = moving
        if self.downsample > 1:
            sizes = tuple(moving.shape[2:])
            if any(s % self.size_multiple for s in sizes):
                raise InputError(
                    f"Cascade.forward(): spatial sizes {sizes} must be multiples of "
                    f"{self.size_multiple} (stages at 1/{self.downsample} resolution)"
                )
            fixed, moving = (_pool(x, self.downsample) for x in (fixed, moving))
        agg: Tensor | None = None
        affine: tuple[Tensor, Tensor] | None = None
        warped = moving
        # networks may run under autocast (bf16); fields, composition and warping stay in
        # float32: bf16 resolves voxel coordinates only to 0.25-0.5 voxel
        device = moving.device.type
        if self.affine is not None:
            agg, a, b = self.affine(fixed, moving)
            affine = (a, b)
            with no_autocast(device):
                warped = warp(_full(moving), agg)
        increments = []
        for k, net in enumerate(self.subnets):
            u = net(fixed, warped)
            with no_autocast(device):
                u = _full(u)
                increments.append(u)
                if agg is None:
                    agg = u
                elif k == 0 and affine is not None:
                    agg = torch.einsum("bij,bj...->bi...", affine[0], u) + agg
                else:
                    agg = compose(agg, u)
                # the last warp is needed only as an output, and only here at full resolution
                if k < len(self.subnets) - 1 or (self.downsample == 1 and final_warp):
                    warped = warp(_full(moving), agg)
        if agg is None:  # unreachable: __init__ requires a stem or a subnetwork
            raise RuntimeError("Cascade.forward(): no stage produced a displacement")
        if self.downsample > 1:
            with no_autocast(device):
                agg = upsample_disp(agg, self.downsample)
                if final_warp:
                    warped = warp(_full(full_moving), agg)
        return CascadeOutput(disp=agg, warped=warped, increments=increments, affine=affine)


def _pool(x: Tensor, factor: int) -> Tensor:
    """``x`` average-pooled by ``factor`` along every spatial axis."""
    pool = F.avg_pool3d if x.dim() == 5 else F.avg_pool2d
    return pool(x, factor)


def _full(x: Tensor) -> Tensor:
    """``x`` in float32 unless it already is float32 or float64 (e.g. bf16 under autocast)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def build_teacher(
    n_cascades: int, ndim: int = 3, base_width: int = 16, affine: bool = True
) -> Cascade:
    """The RCN teacher: an :class:`AffineStem` and ``n_cascades`` :class:`VTN` subnetworks.

    Each VTN has ``flow_multiplier = 1 / n_cascades``.

    Args:
        n_cascades: number of deformable cascades, ``>= 1``.
        ndim: 2 or 3 spatial dimensions.
        base_width: width of the first layer of every VTN and of the affine stem.
        affine: whether to start with the affine stem.

    Returns:
        The cascade (inputs: sizes multiples of 64).
    """
    ndim = check_ndim("build_teacher", ndim)
    n = _check_n("build_teacher", n_cascades)
    nets = [VTN(ndim, flow_multiplier=1.0 / n, base_width=base_width) for _ in range(n)]
    return Cascade(nets, AffineStem(ndim, base_width=base_width) if affine else None)


def build_student(
    n_cascades: int,
    ndim: int = 3,
    variant: str = "ldr",
    affine: bool = True,
    downsample: int = 1,
) -> Cascade:
    """The LDR student: a :class:`SmallAffineStem` and ``n_cascades`` student subnetworks.

    Each subnetwork has ``flow_multiplier = 1 / n_cascades``.

    Args:
        n_cascades: number of deformable cascades, ``>= 1``.
        ndim: 2 or 3 spatial dimensions.
        variant: ``"ldr"`` (:class:`LDRStudent`, the paper's) or ``"fast"``
            (:class:`LDRStudentFast`).
        affine: whether to start with the small affine stem.
        downsample: 1, or 2 to run every stage at half resolution (see :class:`Cascade`).

    Returns:
        The cascade (inputs: sizes multiples of ``16 * downsample``).
    """
    ndim = check_ndim("build_student", ndim)
    n = _check_n("build_student", n_cascades)
    variant = check_option("build_student", "variant", variant, STUDENT_VARIANTS)
    cls = LDRStudent if variant == "ldr" else LDRStudentFast
    nets = [cls(ndim, flow_multiplier=1.0 / n) for _ in range(n)]
    return Cascade(nets, SmallAffineStem(ndim) if affine else None, downsample=downsample)


def _check_n(fn: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{fn}(): 'n_cascades' must be an int >= 1, got {n!r}")
    return n


def build_registration_network(model: Mapping[str, Any], role: str) -> Cascade:
    """The registration network of a ``role`` and the ``model`` section of a registration config
    (a registration checkpoint's ``config["model"]``, as a mapping).

    ``teacher``: affine stem + VTN cascades; ``student``: small affine stem + LDR cascades;
    ``voxelmorph``: one VoxelMorph-style U-Net. Keys read: ``ndim``, ``cascades``, ``affine``,
    ``teacher_width``, ``student_variant``, ``student_downsample`` (defaults as the registration
    config's where absent). Every result is a :class:`Cascade`.

    Raises:
        InputError: an unknown role.
    """
    ndim = int(model.get("ndim", 3))
    if role == "teacher":
        width = int(model.get("teacher_width", 16))
        return build_teacher(
            int(model.get("cascades", 3)), ndim, width, bool(model.get("affine", True))
        )
    if role == "student":
        return build_student(
            int(model.get("cascades", 3)),
            ndim,
            str(model.get("student_variant", "ldr")),
            affine=bool(model.get("affine", True)),
            downsample=int(model.get("student_downsample", 1)),
        )
    if role == "voxelmorph":
        return Cascade([VoxelMorph(ndim)], None)
    raise InputError(f"model role must be one of {', '.join(REGISTRATION_ROLES)}, got {role!r}")
