"""Segmenting an image by label transfer: warp the atlas labels onto the image's own grid.

Any network that registers ``(fixed, moving)`` pairs and returns an object with ``.disp`` (an
LT-Net forward generator through :func:`~medistill.labeltransfer.model.transfer_network`, or a
registration checkpoint such as the distilled LDR student) is run atlas -> image by
:func:`medistill.spatial.native.register_images` with the IMAGE as the fixed image: a working
grid around the image's content, an initial centre-of-mass translation, the network, and the
field brought back to the image's grid through world space. The atlas labels are then sampled at
the atlas points of every image voxel, linearly on their one-hot encoding followed by argmax
(or nearest neighbour), so the result lies on the image's grid with the image's affine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from medistill.errors import InputError
from medistill.io import Image, check_same_grid
from medistill.spatial.field import Field
from medistill.spatial.native import moving_coordinates, register_images, resample_labels

__all__ = ["INTERPOLATIONS", "Transfer", "check_atlas", "transfer_labels"]

INTERPOLATIONS = ("linear", "nearest")


@dataclass
class Transfer:
    """A label transfer on the image's own grid.

    Attributes:
        labels: transferred label map (int32) on the image's grid and affine.
        warped_atlas: the atlas image resampled onto the image's grid.
        field: the transform as a :class:`~medistill.spatial.field.Field` on the image's grid,
            in voxels (image voxel ``y`` corresponds to the atlas world point
            ``A_image (y + d(y))``; ``disp_voxel`` is its array).
        jacobian: ``(*image.shape)`` Jacobian determinant of the transform.
        seconds_network: time of the network forward pass.
        seconds_total: time of the whole transfer (no file I/O).
    """

    labels: Image
    warped_atlas: Image
    field: Field
    jacobian: np.ndarray
    seconds_network: float
    seconds_total: float

    @property
    def disp_voxel(self) -> np.ndarray:
        """``(ndim, *image.shape)`` displacement in image voxels."""
        return self.field.to("voxel").data


def _integer_valued(data: np.ndarray) -> bool:
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return True
    return bool(np.all(np.isfinite(data)) and np.all(np.mod(data, 1) == 0))


def check_atlas(atlas: Image, atlas_labels: Image, ndim: int) -> Image:
    """Check an atlas image and label map for a ``ndim``-D network; return the labels on exactly
    the atlas grid (:func:`medistill.io.check_same_grid`).

    Raises:
        InputError: another dimensionality, a label map with non-integer values, or label map and
            image on different grids.
    """
    for name, img in (("atlas", atlas), ("atlas labels", atlas_labels)):
        if img.ndim != ndim:
            raise InputError(
                f"{img.source}: {name} is {img.ndim}-D but the model transfers {ndim}-D labels"
            )
    if not _integer_valued(np.asarray(atlas_labels.data)):
        raise InputError(f"{atlas_labels.source}: atlas label map has non-integer values")
    labels = Image(
        np.asarray(atlas_labels.data).astype(np.int32),
        atlas_labels.affine,
        True,
        atlas_labels.source,
    )
    return check_same_grid(atlas, labels)


def transfer_labels(
    model: nn.Module,
    atlas: Image,
    atlas_labels: Image,
    image: Image,
    *,
    shape: tuple[int, ...],
    interp: str = "linear",
    initial: str = "com",
) -> Transfer:
    """Segment ``image`` by warping ``atlas_labels`` with ``model`` (atlas -> image).

    Args:
        model: registration network ``model(fixed, moving).disp`` in eval mode, e.g.
            :func:`~medistill.labeltransfer.model.transfer_network` of LT-Net or a registration
            :class:`~medistill.nets.Cascade`.
        atlas: atlas image (any grid).
        atlas_labels: atlas label map on the atlas' grid.
        image: image to segment (any grid, orientation, spacing).
        shape: working grid the model was trained on.
        interp: ``"linear"`` (one-hot, then argmax) or ``"nearest"``.
        initial: ``"com"`` (match intensity centres of mass first) or ``"none"``.

    Returns:
        :class:`Transfer` with the labels on ``image``'s grid and affine.

    Raises:
        InputError: dimensionality of atlas, labels, image and model differ, non-integer atlas
            labels, atlas and labels on different grids, unknown ``interp``.
    """
    ndim = len(shape)
    if interp not in INTERPOLATIONS:
        raise InputError(
            f"transfer_labels(): 'interp' must be one of {INTERPOLATIONS}, got {interp!r}"
        )
    if image.ndim != ndim:
        raise InputError(
            f"{image.source}: image is {image.ndim}-D but the model transfers {ndim}-D labels"
        )
    labels = check_atlas(atlas, atlas_labels, ndim)
    t0 = time.perf_counter()
    reg = register_images(model, image, atlas, shape=shape, initial=initial)
    coords = moving_coordinates(image, atlas, reg.disp_voxel)
    out = resample_labels(labels.data, coords, interp=interp)
    return Transfer(
        labels=Image(out, image.affine.copy(), True, f"labels of {image.source}"),
        warped_atlas=reg.warped,
        field=reg.field,
        jacobian=reg.jacobian,
        seconds_network=reg.seconds_network,
        seconds_total=time.perf_counter() - t0,
    )
