"""Applying a trained registration network to images on their own grids.

The pipeline lives in :mod:`medistill.spatial.native` (shared with the optimiser and label
transfer); this module keeps the registration task's names.
"""

from __future__ import annotations

from medistill.spatial.native import (
    Registration,
    centre_of_mass_mm,
    moving_coordinates,
    register_images,
)

__all__ = ["Registration", "centre_of_mass_mm", "moving_coordinates", "register_images"]
