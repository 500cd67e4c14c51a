"""Integration of stationary velocity fields (scaling and squaring)."""

from __future__ import annotations

from torch import Tensor

from medistill.errors import InputError
from medistill.spatial._checks import check_field
from medistill.spatial.compose import compose

__all__ = ["integrate_velocity"]


def integrate_velocity(vel: Tensor, steps: int = 7) -> Tensor:
    """Displacement of the exponential of a stationary velocity field by scaling and squaring.

    ``u_0 = vel / 2**steps``, then ``steps`` times ``u <- compose(u, u)`` (i.e.
    ``u(x) + u(x + u(x))``), giving the displacement of the flow of ``vel`` at time 1 (Arsigny et
    al., MICCAI 2006, doi:10.1007/11866565_113). Smooth velocities give diffeomorphisms up to
    discretisation.

    Args:
        vel: ``(B, ndim, *S)`` velocity in voxels (per unit time).
        steps: number of squarings ``>= 0``.

    Returns:
        ``(B, ndim, *S)`` displacement in voxels. Differentiable.

    Raises:
        InputError: on a wrong shape or negative ``steps``.
    """
    check_field("integrate_velocity", "vel", vel)
    if int(steps) != steps or steps < 0:
        raise InputError(f"integrate_velocity(): 'steps' must be an int >= 0, got {steps!r}")
    disp = vel / (2.0 ** int(steps))
    for _ in range(int(steps)):
        disp = compose(disp, disp)
    return disp
