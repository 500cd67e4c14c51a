"""Composition of voxel displacement fields (backward-warping convention)."""

from __future__ import annotations

from torch import Tensor

from medistill.errors import InputError
from medistill.spatial._checks import check_field
from medistill.spatial.warp import warp

__all__ = ["compose"]


def compose(first: Tensor, second: Tensor) -> Tensor:
    """The field equivalent to warping with ``first`` and then with ``second``.

    With the backward convention ``warp(m, u)(x) = m(x + u(x))``::

        warp(warp(m, first), second)(x) = m(x + second(x) + first(x + second(x)))

    so the result is ``c(x) = second(x) + first(x + second(x))``, where ``first`` is resampled
    at ``x + second(x)`` by linear interpolation with border padding. Then
    ``warp(m, c) ≈ warp(warp(m, first), second)``, with one interpolation of ``m`` instead of
    two (equality up to the interpolation of ``first`` and of the intermediate image).

    This is the cascade rule of recursive cascaded networks: the moving image already warped by
    ``agg_{k-1}`` is registered by cascade ``k`` with increment ``u_k``, and
    ``agg_k = compose(agg_{k-1}, u_k)``, i.e. ``agg_k(x) = u_k(x) + agg_{k-1}(x + u_k(x))``.
    For an affine ``first`` (``first(x) = W (x - c) + b``, ``A = I + W``) this equals
    ``A second(x) + first(x)`` wherever ``x + second(x)`` stays inside the grid (outside, the
    border padding of ``first`` differs from its linear extension).

    Args:
        first: ``(B, ndim, *S)`` displacement applied first (voxels).
        second: ``(B, ndim, *S)`` displacement applied second (voxels); batch 1 of either
            broadcasts.

    Returns:
        ``(B, ndim, *S)`` composed displacement in voxels. Differentiable in both inputs.

    Raises:
        InputError: if the fields' shapes are incompatible.
    """
    check_field("compose", "first", first)
    check_field("compose", "second", second)
    if first.dim() != second.dim() or first.shape[2:] != second.shape[2:]:
        raise InputError(
            f"compose(): 'first' {tuple(first.shape)} and 'second' {tuple(second.shape)} must be "
            "fields of the same dimension and spatial size"
        )
    return second + warp(first, second, mode="linear", padding="border")
