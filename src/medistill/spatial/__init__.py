"""Spatial transforms on voxel displacement fields (PyTorch, 2-D and 3-D, batched).

Convention (``docs/METHODS.md``): images are ``(B, C, D, H, W)`` / ``(B, C, H, W)``; a
displacement ``u`` is ``(B, ndim, *S)`` with channel ``k`` along spatial axis ``k`` in voxels;
warping is backward, ``warped(x) = moving(x + u(x))``, linear between voxel centres
(``grid_sample(align_corners=True)``), border padding. Everything follows the input's device
and dtype and is differentiable unless stated otherwise.

Modules: ``grid`` (voxel/normalised coordinates), ``warp`` (warping, labels, points),
``compose`` (field composition), ``affine`` (affine maps as fields), ``bspline`` (smooth
fields), ``jacobian`` (derivatives and determinants), ``resize`` (fields on other grid sizes),
``world`` (mm, other grids, ANTs/ITK export), ``integrate`` (scaling and squaring), ``field``
(a displacement with its grid and units, as results leave a task).
"""

from medistill.spatial.affine import affine_to_disp, rotation_matrix
from medistill.spatial.bspline import bspline_disp, bspline_weights, random_smooth_disp
from medistill.spatial.compose import compose
from medistill.spatial.field import Field
from medistill.spatial.grid import identity_grid, normalized_to_voxel, voxel_to_normalized
from medistill.spatial.integrate import integrate_velocity
from medistill.spatial.jacobian import jacobian_det, spatial_gradient
from medistill.spatial.resize import resize_disp, upsample_disp
from medistill.spatial.warp import (
    MODES,
    PADDINGS,
    SpatialTransformer,
    resample,
    sample_at_points,
    warp,
    warp_labels,
)
from medistill.spatial.world import (
    disp_voxel_to_world,
    disp_world_to_voxel,
    itk_displacement_nifti,
    lps_to_ras,
    ras_to_lps,
    resample_disp_between_grids,
)

__all__ = [
    "MODES",
    "PADDINGS",
    "Field",
    "SpatialTransformer",
    "affine_to_disp",
    "bspline_disp",
    "bspline_weights",
    "compose",
    "disp_voxel_to_world",
    "disp_world_to_voxel",
    "identity_grid",
    "integrate_velocity",
    "itk_displacement_nifti",
    "jacobian_det",
    "lps_to_ras",
    "normalized_to_voxel",
    "ras_to_lps",
    "resample",
    "random_smooth_disp",
    "resample_disp_between_grids",
    "resize_disp",
    "rotation_matrix",
    "sample_at_points",
    "spatial_gradient",
    "upsample_disp",
    "voxel_to_normalized",
    "warp",
    "warp_labels",
]
