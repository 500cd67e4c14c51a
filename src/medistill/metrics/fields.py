"""Properties of a set of displacement fields: how much they depend on their images."""

from __future__ import annotations

from torch import Tensor

from medistill.errors import InputError

__all__ = ["field_spread"]


def field_spread(fields: Tensor) -> float:
    """Spread of fields over the images that produced them, relative to their length:
    ``mean_x mean_i ||u_i(x) - mean_j u_j(x)|| / mean_x mean_i ||u_i(x)||``.

    0 for an image-independent field (every image gets the same deformation: a collapsed
    registration network), about 1 or more when each image gets its own field. A field set that
    is zero everywhere has spread 0.

    Args:
        fields: ``(N, ndim, *S)`` displacements (any unit, the same for all), ``N >= 2``.

    Returns:
        The spread (unitless).

    Raises:
        InputError: fewer than two fields, or not a field tensor.
    """
    if not isinstance(fields, Tensor) or fields.dim() < 3 or fields.shape[0] < 2:
        shape = tuple(fields.shape) if isinstance(fields, Tensor) else type(fields).__name__
        raise InputError(f"field_spread(): 'fields' must be (N >= 2, ndim, *S), got {shape}")
    u = fields.detach().double()
    length = u.norm(dim=1).mean()
    if float(length) == 0.0:
        return 0.0
    deviation = (u - u.mean(dim=0, keepdim=True)).norm(dim=1).mean()
    return float(deviation / length)
