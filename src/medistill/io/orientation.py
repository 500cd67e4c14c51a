"""Reorientation to the canonical RAS+ axis order and back, without resampling."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np

from medistill.errors import InputError
from medistill.io.image import Image


@dataclass(frozen=True)
class Reorientation:
    """How an image was permuted/flipped to RAS+; holds what is needed to undo it exactly.

    Attributes:
        ornt: nibabel orientation array ``(ndim, 2)`` applied to the original array.
        original_shape: grid size of the original array.
        original_affine: ``(4, 4)`` original voxel-to-world affine.
    """

    ornt: np.ndarray
    original_shape: tuple[int, ...]
    original_affine: np.ndarray


def _plane_affine(affine: np.ndarray, ndim: int) -> np.ndarray:
    """The ``(ndim + 1, ndim + 1)`` affine that nibabel's orientation tools expect."""
    if ndim == 3:
        return affine
    rows = [0, 1, 3]
    return affine[np.ix_(rows, rows)]


def _apply(image: Image, ornt: np.ndarray) -> Image:
    data = nio.apply_orientation(image.data, ornt)
    small = nio.inv_ornt_aff(ornt, image.shape)  # new index -> old index
    if image.ndim == 3:
        step = small
    else:
        step = np.eye(4)
        step[np.ix_([0, 1, 3], [0, 1, 3])] = small
    return Image(
        data=np.ascontiguousarray(data),
        affine=image.affine @ step,
        is_label=image.is_label,
        source=image.source,
    )


def to_canonical(image: Image) -> tuple[Image, Reorientation]:
    """Permute/flip the array so that its axes run along R, A, S (x, y in 2-D); no interpolation.

    Returns:
        The reoriented image (same world geometry, new affine close to diagonal-positive) and the
        :class:`Reorientation` that :func:`from_canonical` uses to restore the original exactly.
    """
    ornt = nio.io_orientation(_plane_affine(image.affine, image.ndim))
    return _apply(image, ornt), Reorientation(ornt, image.shape, image.affine.copy())


def from_canonical(image: Image, reorientation: Reorientation) -> Image:
    """Undo :func:`to_canonical`: same array order and affine as the original image.

    Raises:
        InputError: ``image`` is not on the canonical grid of that reorientation.
    """
    inverse = nio.ornt_transform(
        nio.io_orientation(_plane_affine(image.affine, image.ndim)),
        nio.io_orientation(_plane_affine(reorientation.original_affine, image.ndim)),
    )
    out = _apply(image, inverse)
    if out.shape != reorientation.original_shape:
        raise InputError(
            f"from_canonical(): image of shape {image.shape} does not come from a grid of shape "
            f"{reorientation.original_shape}"
        )
    return Image(out.data, reorientation.original_affine.copy(), out.is_label, out.source)
